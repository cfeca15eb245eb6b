"""poolhub settings: 12-factor, read from the environment, embedded defaults when unset.

Nothing configured means the embedded column of docs/architecture.md: SQLite under var/, the
embedded Redis on var/redis.sock (staging, broker, channel layer) and SecantusDB on
127.0.0.1:27018 as the file store. `make run` starts those for you.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import dj_database_url

from poolhub.env import ImproperlyConfiguredEnv, env_bool, env_int, env_list, env_optional, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("POOLHUB_VAR_DIR", str(BASE_DIR / "var")))

PRODUCTION = env_bool("POOLHUB_PRODUCTION", False)
DEBUG = env_bool("DEBUG", False)


def _local_secret_key() -> str:
    """The per-checkout key `make run` keeps under var/ (poolhub.launcher.ensure_local_secret_key).

    Importing settings writes nothing: without that file (a one-off command, a type check, the
    image build) a throwaway key serves this one process. Refused in production.
    """
    if PRODUCTION:
        raise ImproperlyConfiguredEnv("SECRET_KEY must be set when POOLHUB_PRODUCTION is on")
    try:
        return (VAR_DIR / "secret_key").read_text().strip()
    except FileNotFoundError:
        return secrets.token_urlsafe(50)


SECRET_KEY = env_optional("SECRET_KEY") or _local_secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "accounts",
    "uploads",
    "batching",
    "notifications",
    "lifecycle",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "poolhub.urls"
ASGI_APPLICATION = "poolhub.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "poolhub" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- database -------------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'poolhub.sqlite3'}")
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 0))}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and beat share the file: WAL lets readers run beside one writer, IMMEDIATE
    # transactions take the write lock up front so concurrent writers wait instead of failing.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    DATABASES["default"]["TEST"] = {"NAME": env_str("POOLHUB_TEST_SQLITE", str(VAR_DIR / "test.sqlite3"))}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # An unreachable server fails a request (and /readyz) in seconds instead of hanging for minutes.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", env_int("DB_CONNECT_TIMEOUT", 5))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

# --- redis, broker, file store ----------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL", f"unix://{VAR_DIR / 'redis.sock'}")


def _redis_db(url: str) -> int:
    parts = urlsplit(url)
    raw = dict(parse_qsl(parts.query)).get("db") if parts.scheme == "unix" else parts.path.strip("/")
    try:
        return int(raw or 0)
    except ValueError as exc:
        raise ImproperlyConfiguredEnv(f"REDIS_URL names no valid database: {url!r}") from exc


def _redis_db_url(url: str, db: int) -> str:
    """The same Redis server, another logical database."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = dict(parse_qsl(parts.query))
        query["db"] = str(db)
        return f"unix://{parts.path}?{urlencode(query)}"
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, ""))


def _broker_from_redis(url: str) -> str:
    """With no CELERY_BROKER_URL, the queues live in the next logical database of REDIS_URL's server."""
    db = (_redis_db(url) + 1) % 16
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"redis+socket://{parts.path}?virtual_host={db}"
    return _redis_db_url(url, db)


CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", _broker_from_redis(REDIS_URL))
MONGO_URL = env_str("MONGO_URL", f"mongodb://127.0.0.1:{env_int('POOLHUB_FILESTORE_PORT', 27018)}/poolhub")
MONGO_DB = env_str("MONGO_DB", urlsplit(MONGO_URL).path.strip("/") or "poolhub")

CHANNEL_LAYERS = {
    "default": {
        # One Redis pub/sub subscription per group per web process, delivered to that process's
        # sockets in memory (notifications/layer.py, docs/realtime.md): a push costs one PUBLISH
        # whatever the pool's size, and no group outlives the sockets in it.
        "BACKEND": "notifications.layer.PubSubChannelLayer",
        "CONFIG": {
            # health checks notice a Redis that vanished without closing the connection.
            "hosts": [{"address": REDIS_URL, "socket_timeout": 15, "socket_connect_timeout": 5,
                       "health_check_interval": 30}],
            # Pub/sub channels are shared by every database of a Redis server: the prefix names
            # REDIS_URL's database, so deployments (or test runs) on different databases share nothing.
            "prefix": f"poolhub:ws:{_redis_db(REDIS_URL)}:",
            # Pushes a socket may have waiting in its web process; past that the oldest are
            # dropped, and `resume` replays them from the event log.
            "capacity": env_int("CHANNEL_CAPACITY", 1000),
        },
    }
}

# --- celery ---------------------------------------------------------------------------------
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 600)
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 540)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_QUEUE", "poolhub")
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# Rounds (batching): close due windows and end expired leases every few seconds.
POOLHUB_ROUNDS_BEAT_SECONDS = env_int("POOLHUB_ROUNDS_BEAT_SECONDS", 10)
CELERY_BEAT_SCHEDULE["groups_close_due"] = {
    "task": "groups_close_due", "schedule": float(POOLHUB_ROUNDS_BEAT_SECONDS),
}
CELERY_BEAT_SCHEDULE["leases_expire"] = {
    "task": "leases_expire", "schedule": float(POOLHUB_ROUNDS_BEAT_SECONDS),
}
CELERY_BEAT_SCHEDULE["webhooks_redrive_stuck"] = {
    "task": "webhooks_redrive_stuck", "schedule": 300.0,
}
POOLHUB_WEBHOOK_TIMEOUT_SECONDS = env_int("POOLHUB_WEBHOOK_TIMEOUT_SECONDS", 10)
POOLHUB_WEBHOOK_MAX_ATTEMPTS = env_int("POOLHUB_WEBHOOK_MAX_ATTEMPTS", 8)
POOLHUB_WEBHOOK_BACKOFF_SECONDS = env_int("POOLHUB_WEBHOOK_BACKOFF_SECONDS", 5)

# --- API ------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["accounts.authentication.DenylistJWTAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": [
        "poolhub.parsers.JSONParser",  # deep nesting: 400, not RecursionError
        "rest_framework.parsers.MultiPartParser",
        "rest_framework.parsers.FormParser",
    ],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "poolhub.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "poolhub.openapi.PoolhubAutoSchema",
    "DEFAULT_PAGINATION_CLASS": "poolhub.pagination.Pagination",  # limit and offset bounded
    "PAGE_SIZE": 100,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_THROTTLE_RATES": {
        "auth": env_str("THROTTLE_AUTH", "30/min"),
        # Login: requests per address, high enough for a fleet behind one NAT; failures are limited
        # per account and per address apart (accounts/login_guard.py).
        "login": env_str("THROTTLE_LOGIN", "1200/min"),
        # Refresh tokens cannot be guessed, and a fleet behind one NAT refreshes often: its own rate.
        "refresh": env_str("THROTTLE_REFRESH", "600/min"),
        "uploads": env_str("THROTTLE_UPLOADS", "600/min"),
    },
    "UNAUTHENTICATED_USER": None,
    # How many proxies in front of us append to X-Forwarded-For. 0: throttles key on the peer
    # address, so a client cannot reset its count by sending a made-up X-Forwarded-For.
    "NUM_PROXIES": env_int("NUM_PROXIES", 0),
}
SPECTACULAR_SETTINGS = {
    "TITLE": "poolhub API",
    "DESCRIPTION": "Pools of client apps upload files; an external server turns each window into one result.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    # Request and response shapes are separate components, so file fields are binary in requests.
    "COMPONENT_SPLIT_REQUEST": True,
    # JSON bodies, as the contract says; multipart endpoints (uploads, batches, results) say so themselves.
    "PARSER_WHITELIST": ["rest_framework.parsers.JSONParser"],
    # The docs page's assets are served from this server (no CDN): it works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(seconds=env_int("JWT_ACCESS_SECONDS", 300)),
    "REFRESH_TOKEN_LIFETIME": timedelta(seconds=env_int("JWT_REFRESH_SECONDS", 7 * 86400)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    "ALGORITHM": "HS256",
    "SIGNING_KEY": env_optional("JWT_SIGNING_KEY") or SECRET_KEY,
    "USER_ID_FIELD": "id",
    "USER_ID_CLAIM": "user_id",
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Tests and provisioning create many accounts: a cheaper hasher there, PBKDF2 otherwise.
if env_bool("POOLHUB_FAST_PASSWORD_HASHER", False):
    if PRODUCTION:
        raise ImproperlyConfiguredEnv("POOLHUB_FAST_PASSWORD_HASHER is for tests: refused with POOLHUB_PRODUCTION on")
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# --- uploads --------------------------------------------------------------------------------
POOLHUB_MAX_FILE_BYTES = env_int("POOLHUB_MAX_FILE_BYTES", 64 * 1024 * 1024)
POOLHUB_STAGING_BUDGET_BYTES = env_int("POOLHUB_STAGING_BUDGET_BYTES", 2 * 1024 * 1024 * 1024)
POOLHUB_STAGING_CHUNK_BYTES = env_int("POOLHUB_STAGING_CHUNK_BYTES", 1024 * 1024)
POOLHUB_STAGING_TTL_SECONDS = env_int("POOLHUB_STAGING_TTL_SECONDS", 7 * 86400)
POOLHUB_STORE_MAX_ATTEMPTS = env_int("POOLHUB_STORE_MAX_ATTEMPTS", 3)
# Uploads (docs/uploads.md): store retry backoff base (x2 per attempt, with jitter), re-drive of
# uploads left `cached`, allowed clock skew for `timestamp`, idempotency keys kept >= 24 h.
POOLHUB_STORE_RETRY_BASE_SECONDS = env_int("POOLHUB_STORE_RETRY_BASE_SECONDS", 10)
POOLHUB_STORE_RETRY_MAX_SECONDS = env_int("POOLHUB_STORE_RETRY_MAX_SECONDS", 600)
POOLHUB_STORE_SOFT_TIME_LIMIT = env_int("POOLHUB_STORE_SOFT_TIME_LIMIT", 300)
POOLHUB_STORE_TIME_LIMIT = env_int("POOLHUB_STORE_TIME_LIMIT", 360)
POOLHUB_STORE_LOCK_SECONDS = env_int("POOLHUB_STORE_LOCK_SECONDS", 30)  # renewed per chunk; lapses if a worker dies
POOLHUB_STUCK_CACHED_SECONDS = env_int("POOLHUB_STUCK_CACHED_SECONDS", 900)
POOLHUB_TIMESTAMP_MAX_FUTURE_SECONDS = env_int("POOLHUB_TIMESTAMP_MAX_FUTURE_SECONDS", 600)
POOLHUB_IDEMPOTENCY_TTL_SECONDS = env_int("POOLHUB_IDEMPOTENCY_TTL_SECONDS", 2 * 86400)
# A key whose first request is still running is a lease of this many seconds, renewed while the
# request runs (a killed process's key is free again within this); a repeat waits up to
# POOLHUB_IDEMPOTENCY_WAIT_SECONDS for the first to finish.
POOLHUB_IDEMPOTENCY_PENDING_SECONDS = env_int("POOLHUB_IDEMPOTENCY_PENDING_SECONDS", 10)
POOLHUB_IDEMPOTENCY_WAIT_SECONDS = env_int("POOLHUB_IDEMPOTENCY_WAIT_SECONDS", 30)
POOLHUB_STAGING_ALLOW_EVICTION = env_bool("POOLHUB_STAGING_ALLOW_EVICTION", False)
POOLHUB_STAGING_RETRY_AFTER_SECONDS = env_int("POOLHUB_STAGING_RETRY_AFTER_SECONDS", 30)  # on 503 staging_full
CELERY_BEAT_SCHEDULE["uploads_stuck_redrive"] = {"task": "uploads_stuck_redrive", "schedule": 300.0}
CELERY_BEAT_SCHEDULE["staging_reconcile"] = {"task": "staging_reconcile", "schedule": 3600.0}
# Websocket gateway (docs/realtime.md): auth deadline, chunk size, idle transfers expire (bytes dropped).
POOLHUB_WS_AUTH_SECONDS = env_int("POOLHUB_WS_AUTH_SECONDS", 10)
POOLHUB_WS_CHUNK_BYTES = env_int("POOLHUB_WS_CHUNK_BYTES", 512 * 1024)
POOLHUB_WS_TRANSFER_TTL_SECONDS = env_int("POOLHUB_WS_TRANSFER_TTL_SECONDS", 300)  # idle: released
POOLHUB_WS_MAX_OPEN_TRANSFERS = env_int("POOLHUB_WS_MAX_OPEN_TRANSFERS", 8)
POOLHUB_WS_RESYNC_SECONDS = env_int("POOLHUB_WS_RESYNC_SECONDS", 600)  # an open socket re-reads its pools
CELERY_BEAT_SCHEDULE["transfers_expire"] = {"task": "transfers_expire", "schedule": 60.0}
FILE_UPLOAD_MAX_MEMORY_SIZE = 256 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FILES = env_int("POOLHUB_MAX_BATCH_ITEMS", 500)
FILE_UPLOAD_TEMP_DIR = env_optional("FILE_UPLOAD_TEMP_DIR")

# --- the rest -------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "poolhub" / "static"]  # the web page at /
WHITENOISE_AUTOREFRESH = DEBUG
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
SESSION_COOKIE_SECURE = PRODUCTION
CSRF_COOKIE_SECURE = PRODUCTION
SECURE_CONTENT_TYPE_NOSNIFF = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.request": {"level": "ERROR"},
        "pymongo": {"level": "WARNING"},
    },
}

# DRF throttles and small shared state live in Redis, so every web replica sees the same counts.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "poolhub:cache",
    }
}

# --- lifecycle ------------------------------------------------------------------------------
# Provisioning, quotas, retention and round settings (docs/lifecycle.md). Generated secrets of
# provisioned accounts are verified by their own cheap hasher (accounts/hashers.py, why there);
# it is listed last so that it is never used for a password someone chose.
from django.conf import global_settings  # noqa: E402

PASSWORD_HASHERS = [*vars().get("PASSWORD_HASHERS", global_settings.PASSWORD_HASHERS),
                    "accounts.hashers.GeneratedSecretHasher"]
POOLHUB_PROVISION_MAX = env_int("POOLHUB_PROVISION_MAX", 1000)
# The retention job: how often it runs, how many uploads or results it purges per batch, and how
# many batches per run at most (the next run goes on where this one stopped).
POOLHUB_PURGE_INTERVAL_SECONDS = env_int("POOLHUB_PURGE_INTERVAL_SECONDS", 600)
POOLHUB_PURGE_BATCH = env_int("POOLHUB_PURGE_BATCH", 200)
POOLHUB_PURGE_MAX_BATCHES = env_int("POOLHUB_PURGE_MAX_BATCHES", 50)
# A failed upload's staged bytes are kept for re-drive this many days, then released (0: never).
POOLHUB_FAILED_UPLOAD_KEEP_DAYS = env_int("POOLHUB_FAILED_UPLOAD_KEEP_DAYS", 14)
CELERY_BEAT_SCHEDULE["purge_expired"] = {"task": "purge_expired",
                                                   "schedule": float(POOLHUB_PURGE_INTERVAL_SECONDS)}

# --- harden (docs/configuration.md "Security and limits") -----------------------------------
# Webhooks call public addresses only; a trusted network (or the test suite) may allow private ones.
POOLHUB_WEBHOOK_ALLOW_PRIVATE = env_bool("POOLHUB_WEBHOOK_ALLOW_PRIVATE", False)
POOLHUB_WEBHOOK_ALLOW_HTTP = env_bool("POOLHUB_WEBHOOK_ALLOW_HTTP", not PRODUCTION)
# Request bodies (uploads/asgi.py): each endpoint's cap, refused with 413 before it is read.
POOLHUB_MAX_AUTH_BODY_BYTES = env_int("POOLHUB_MAX_AUTH_BODY_BYTES", 4 * 1024)
POOLHUB_MAX_JSON_BODY_BYTES = env_int("POOLHUB_MAX_JSON_BODY_BYTES", 64 * 1024)
POOLHUB_MAX_BATCH_BYTES = env_int("POOLHUB_MAX_BATCH_BYTES", 256 * 1024 * 1024)
POOLHUB_MAX_RESULT_BYTES = env_int("POOLHUB_MAX_RESULT_BYTES", 64 * 1024 * 1024)

# --- web ---
# Files larger than this go from the web page over the resumable path (tus where the server has it,
# else the websocket transfer verbs) instead of one multipart POST.
POOLHUB_WEB_LARGE_FILE_BYTES = env_int("POOLHUB_WEB_LARGE_FILE_BYTES", 8 * 1024 * 1024)
# 0: the page sends them over the socket transfer verbs even where the tus endpoint exists
# (say, behind a proxy that refuses PATCH).
POOLHUB_WEB_TUS = env_bool("POOLHUB_WEB_TUS", True)
# whitenoise also serves files the staticfiles finders find (poolhub/static), so the page works from
# a checkout that never ran collectstatic (`make run`, the browser tests); collected files still win.
WHITENOISE_USE_FINDERS = True
# Failed logins (accounts/login_guard.py): per account and per address, in fixed windows.
POOLHUB_LOGIN_FAILURES_PER_ACCOUNT = env_int("POOLHUB_LOGIN_FAILURES_PER_ACCOUNT", 10)
POOLHUB_LOGIN_FAILURES_PER_ADDRESS = env_int("POOLHUB_LOGIN_FAILURES_PER_ADDRESS", 100)
POOLHUB_LOGIN_FAILURE_WINDOW_SECONDS = env_int("POOLHUB_LOGIN_FAILURE_WINDOW_SECONDS", 900)
MIDDLEWARE.insert(MIDDLEWARE.index("django.contrib.auth.middleware.AuthenticationMiddleware") + 1,
                  "accounts.login_guard.AdminLoginGuard")  # the admin's login page: the same counters
AUTH_PASSWORD_VALIDATORS.append({"NAME": "accounts.validators.NotOnlyWhitespaceValidator"})

# Production over TLS: browsers remember to use https only (HSTS, sent on secure requests), and
# behind a TLS-terminating proxy that sets X-Forwarded-Proto, requests are known to be secure.
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000 if PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
if env_bool("POOLHUB_TLS_PROXY", PRODUCTION):
    # Only safe when the proxy overwrites the header: a client could otherwise claim https.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# One user's websocket transfers (uploads/transfer_limits.py): the bytes their declared sizes may
# reserve of the staging budget (and POOLHUB_WS_MAX_OPEN_TRANSFERS of them); past either, 503 staging_full.
POOLHUB_USER_STAGING_BYTES = env_int("POOLHUB_USER_STAGING_BYTES", 256 * 1024 * 1024)
# --- files (docs/configuration.md "Files: downloads and tus") ---------------------------------
# A tus upload idle this long expires (Upload-Expires) and its staged bytes are released.
POOLHUB_TUS_EXPIRY_SECONDS = env_int("POOLHUB_TUS_EXPIRY_SECONDS", 6 * 3600)
# One user's unfinished tus uploads count in the websocket transfers' cap (POOLHUB_WS_MAX_OPEN_TRANSFERS,
# POOLHUB_USER_STAGING_BYTES).
# Origins (scheme://host[:port]) of web pages served elsewhere that may call the tus endpoints.
POOLHUB_TUS_CORS_ORIGINS = env_list("POOLHUB_TUS_CORS_ORIGINS", [])
CELERY_BEAT_SCHEDULE["tus_uploads_expire"] = {"task": "tus_uploads_expire", "schedule": 300.0}

# --- ops: logs and metrics (docs/operations.md "Logs" and "Metrics") ---------------------------
from poolhub.logs import logging_config  # noqa: E402

# `json`: one JSON object per line (the image, compose and Kubernetes set it); `text` for a terminal.
LOG_FORMAT = env_str("LOG_FORMAT", "text")
if LOG_FORMAT not in ("json", "text"):
    raise ImproperlyConfiguredEnv(f"LOG_FORMAT must be json or text, got {LOG_FORMAT!r}")
LOGGING = logging_config(fmt=LOG_FORMAT, level=env_str("LOG_LEVEL", "INFO"))
# GET /metrics answers these networks, or `Authorization: Bearer METRICS_TOKEN`; 404 to anyone else.
METRICS_ALLOWED_CIDRS = env_list("METRICS_ALLOWED_CIDRS", ["127.0.0.0/8", "::1/128"])
METRICS_TOKEN = env_optional("METRICS_TOKEN")
MIDDLEWARE = ["poolhub.metrics.MetricsMiddleware", *MIDDLEWARE]

# --- ingest (docs/configuration.md "Ingest") -------------------------------------------------
# The store hand-off: the committed `cached` rows are the outbox, a kick is sent after commit and
# the relay re-sends it for uploads still waiting after POOLHUB_STORE_KICK_SECONDS. Workers store
# first attempts in batches of up to POOLHUB_STORE_BATCH_FILES files / POOLHUB_STORE_BATCH_BYTES.
POOLHUB_STORE_KICK_SECONDS = env_int("POOLHUB_STORE_KICK_SECONDS", 5)
POOLHUB_STORE_BATCH_FILES = env_int("POOLHUB_STORE_BATCH_FILES", 32)
POOLHUB_STORE_BATCH_BYTES = env_int("POOLHUB_STORE_BATCH_BYTES", 8 * 1024 * 1024)
CELERY_BEAT_SCHEDULE["uploads_pending_kick"] = {
    "task": "uploads_pending_kick", "schedule": float(POOLHUB_STORE_KICK_SECONDS),
}
