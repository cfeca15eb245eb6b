"""On PostgreSQL the database itself refuses UPDATE and DELETE on the event log.

TRUNCATE stays possible: it is an operator's tool (and how test runs reset the database).
"""

from django.db import migrations

FORWARD = """
CREATE OR REPLACE FUNCTION poolhub_event_log_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only: % refused', TG_OP USING ERRCODE = 'restrict_violation';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER uploads_event_append_only
    BEFORE UPDATE OR DELETE ON uploads_event
    FOR EACH ROW EXECUTE FUNCTION poolhub_event_log_append_only();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS uploads_event_append_only ON uploads_event;
DROP FUNCTION IF EXISTS poolhub_event_log_append_only();
"""


def forward(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD, params=None)  # the % in RAISE is not a placeholder


def backward(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD, params=None)


class Migration(migrations.Migration):
    dependencies = [("uploads", "0001_initial")]
    operations = [migrations.RunPython(forward, backward)]
