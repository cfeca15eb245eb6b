// The tus Node server baseline for `make bench`: @tus/server with its file store, nothing else.
// node server.mjs <port> <upload directory>; the bench installs the packages with npm (bench/tus.py).
import http from "node:http";
import { Server } from "@tus/server";
import { FileStore } from "@tus/file-store";

const [port, directory] = process.argv.slice(2);
const tus = new Server({ path: "/files", datastore: new FileStore({ directory }) });
http.createServer((req, res) => {
  if (req.url === "/healthz") {
    res.writeHead(200, { "content-type": "application/json" }).end('{"status":"ok"}');
    return;
  }
  tus.handle(req, res);
}).listen(Number(port), "127.0.0.1");
