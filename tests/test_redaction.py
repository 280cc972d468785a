"""Secret redaction: each shape, the usual false positives, and the counts through the pipeline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conftest import make_settings
from generators import ClaudeSession, dump
from ingestd.chunker import Packer, merge_meta
from ingestd.engine import Engine
from ingestd.parsers.units import Unit
from ingestd.pipeline import FileJob
from ingestd.redaction import redact
from voyage_server import VoyageServer

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
GITHUB = "ghp_" + "a1B2c3D4e5F6g7H8i9J0" + "k1L2m3N4o5P6q7R8"
OPENAI = "sk-proj-Abc123def456GHI789jkl012MNO345pqr678STU"
ANTHROPIC = "sk-ant-api03-Abcdefghijklmnop1234567890_QRSTUV-xyzXYZ0987654321"
VOYAGE = "pa-Abc123def456GHI789jkl012MNO345pqr678STUvwx"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7bq0Wm1bX2zY5n3Kx0rHh3Gm3o2V9P0x1tQv8mGz5LrW\n"
    "c2VjcmV0IGtleSBtYXRlcmlhbCBoZXJlIGZvciB0ZXN0cw==\n-----END RSA PRIVATE KEY-----"
)

SHAPES = [
    ("key id AKIAIOSFODNN7EXAMPLE in a log", "aws-access-key", "AKIAIOSFODNN7EXAMPLE"),
    ("temporary ASIAY34FZKBOKMUTVV7A", "aws-access-key", "ASIAY34FZKBOKMUTVV7A"),
    (f"aws_secret_access_key = {AWS_SECRET}", "aws-secret-key", AWS_SECRET),
    (f'{{"SecretAccessKey": "{AWS_SECRET}"}}', "aws-secret-key", AWS_SECRET),
    (f"git remote set-url origin with {GITHUB}", "github-token", GITHUB),
    ("gho_" + "Z" * 36, "github-token", "gho_" + "Z" * 36),
    ("ghs_" + "9a" * 18, "github-token", "ghs_" + "9a" * 18),
    ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123", "github-token", "github_pat_11ABCDEFG"),
    ("glpat-Ab3dEfGh1jKlMnOpQrSt", "gitlab-token", "glpat-Ab3dEfGh1jKlMnOpQrSt"),
    ("SLACK=xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOp", "slack-token", "xoxb-123456789012"),
    ("xoxp-1234567890-abcdefghij", "slack-token", "xoxp-1234567890-abcdefghij"),
    (f"client = OpenAI(api_key='{OPENAI}')", "openai-key", OPENAI),
    ("sk-" + "A1b2C3d4E5f6G7h8I9j0" * 2 + "KL", "openai-key", "A1b2C3d4E5f6G7h8I9j0"),
    (f"ANTHROPIC_API_KEY={ANTHROPIC}", "anthropic-key", ANTHROPIC),
    (f"voyage key {VOYAGE}", "voyage-key", VOYAGE),
    (f"Cookie: session={JWT}", "jwt", JWT),
    (f"cat id_rsa\n{PEM}\ndone", "private-key", "MIIEowIBAAKCAQEA"),
    (
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAA\n",
        "private-key",
        "b3BlbnNz",
    ),
    ("password=hunter22", "password", "hunter22"),
    ("mysql -u root --password=hunter22 appdb", "password", "hunter22"),
    ("GET /export?access_token=abc123def456&page=2", "token", "abc123def456"),
    ("DB_PASSWORD='c0rrect horse'", "password", "c0rrect horse"),
    ('{"password": "s3cr3t-value"}', "password", "s3cr3t-value"),
    ("database:\n  password: Tr0ub4dor&3\n  host: db", "password", "Tr0ub4dor&3"),
    ("token: 0a1b2c3d4e5f6a7b8c9d", "token", "0a1b2c3d4e5f6a7b8c9d"),
    ("export API_KEY=abcd1234efgh5678", "api-key", "abcd1234efgh5678"),
    ("api-key: zzTopSecretValue99", "api-key", "zzTopSecretValue99"),
    ("client_secret = 'Q2xpZW50U2VjcmV0'", "secret", "Q2xpZW50U2VjcmV0"),
    ("curl -H 'Authorization: Bearer abcdefghijklmnop1234567890'", "bearer-token", "abcdefghijklmnop12"),
    # Authorization headers: Basic credentials, and tokens too short for the bare Bearer shape.
    ("curl -H 'Authorization: Basic dXNlcjpwYXNzd29yZA=='", "basic-auth", "dXNlcjpwYXNzd29yZA"),
    ("> Proxy-Authorization: basic YWRtaW46YWRtaW4=", "basic-auth", "YWRtaW46YWRtaW4"),
    ('headers = {"Authorization": "Bearer t0k3n-xyz"}', "bearer-token", "t0k3n-xyz"),
    ("Authorization: token ghx0123456", "token", "ghx0123456"),
    ("SLACK_APP=xapp-1-A0123456789-1234567890123-abcdef0123456789", "slack-token", "xapp-1-A0123456789"),
    (
        "post to https://hooks.slack.com/services/T0ABCDEF1/B0ABCDEF2/aBcDeFgHiJkLmNoPqRsTuVwX now",
        "slack-webhook",
        "aBcDeFgHiJkLmNoPqRsTuVwX",
    ),
    ("maps?key=AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY&v=3", "google-api-key", "AIzaSyD-9tSrke72PouQMnMX"),
    ('GEMINI = "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q"', "google-api-key", "AIzaSyA1b2C3d4E5f6G7h8I9"),
]


@pytest.mark.parametrize(
    ("text", "kind", "secret"), SHAPES, ids=[s[1] + f"-{i}" for i, s in enumerate(SHAPES)]
)
def test_each_shape_is_redacted(text: str, kind: str, secret: str) -> None:
    redacted, count = redact(text)
    assert secret not in redacted
    assert f"[REDACTED:{kind}]" in redacted
    assert count == 1
    assert redact(redacted) == (redacted, 0), "placeholders are not redacted again"


def test_connection_string_keeps_scheme_user_and_host() -> None:
    text = "DATABASE_URL=postgres://app:pa55word@db.internal:5432/prod and redis://:s3cret@cache:6379/0"
    redacted, count = redact(text)
    assert redacted == (
        "DATABASE_URL=postgres://app:[REDACTED:password]@db.internal:5432/prod "
        "and redis://:[REDACTED:password]@cache:6379/0"
    )
    assert count == 2
    text = "mongodb+srv://admin:hunter2@cluster0.example.net/?retryWrites=true"
    assert redact(text)[0] == "mongodb+srv://admin:[REDACTED:password]@cluster0.example.net/?retryWrites=true"


def test_assignment_keeps_the_name_and_counts_every_secret() -> None:
    text = (
        f"AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\nAWS_SECRET_ACCESS_KEY={AWS_SECRET}\nGITHUB_TOKEN={GITHUB}\n"
    )
    redacted, count = redact(text)
    assert redacted == (
        "AWS_ACCESS_KEY_ID=[REDACTED:aws-access-key]\nAWS_SECRET_ACCESS_KEY=[REDACTED:aws-secret-key]\n"
        "GITHUB_TOKEN=[REDACTED:github-token]\n"
    )
    assert count == 3


FALSE_POSITIVES = [
    "request id 550e8400-e29b-41d4-a716-446655440000 failed",
    "commit 3f786850e387550fdab836ed7e6dc881de23001b fixed it (short 3f78685)",
    "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b4b0b822cd15d6c15b0f00a08",
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==",
    "SGVsbG8sIHRoaXMgaXMganVzdCBhIGJhc2U2NCBlbmNvZGVkIHNlbnRlbmNlLg==",
    "Please reset your password: the old one expired yesterday.",
    "The password is required and must have twelve characters.",
    "Forgot password? Click the link we sent to reset it.",
    "max_tokens: 512\ntoken_count = len(tokens)\nnum_tokens=4096",
    "password = get_password(user)\ntoken = self.token\nsecret = os.environ['SECRET']",
    "password: ${DB_PASSWORD}\napi_key: <your-api-key>\ntoken: '********'\nsecret: changeme",
    "password: required\ntoken: null\nuse_token: true",
    "postgres://user:${PGPASSWORD}@host/db and https://example.com:8443/path@v2",
    "risk-assessment-2024-q3 and task-1234567890abcdefghijklmn and pa-rent-company-annual-report",
    "the sk-learn style of naming; desk-lamp-with-a-very-long-name-indeed",
    "AKIA is the prefix of AWS keys; AKIAshort is not one",
    "JWTs start with eyJ, like eyJhbGciOi",
    "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n-----END PUBLIC KEY-----",
    "Authorization: required for every call; the Authorization: Basic scheme sends base64",
    "curl -H 'Authorization: Bearer $TOKEN' -H \"Authorization: Basic ${CREDS}\" and Bearer <token>",
    "xapp-store is not a token, nor is xapp-1-short; AIza is the prefix of Google keys",
    "webhooks live under https://hooks.slack.com/services/ (see the Slack docs)",
]


@pytest.mark.parametrize("text", FALSE_POSITIVES)
def test_common_false_positives_are_left_alone(text: str) -> None:
    assert redact(text) == (text, 0)


def test_merge_meta_sums_redactions_and_split_pieces_count_their_own() -> None:
    assert merge_meta([{"redactions": 2}, {}, {"redactions": 3}])["redactions"] == 5
    assert "redactions" not in merge_meta([{}, {"redactions": 0}])


def test_split_unit_pieces_count_only_their_placeholders(tmp_path: Path) -> None:
    from ingestd.embedding.voyage import VoyageProvider

    settings = make_settings(tmp_path, embedding_provider="voyage", voyage_api_key="pa-test-key-0123456789")
    counter = VoyageProvider(settings.embed).counter
    secrets = " ".join(f"password={n}x{'y' * 6}" for n in range(3))
    text, count = redact(secrets + " " + "filler words " * 200)
    unit = Unit(
        text=text, start=0, end=len(text), line=1, next_line=2, label="user", meta={"redactions": count}
    )
    packer = Packer(counter, 64, 0, markdown=False, first_ordinal=0)
    chunks = packer.feed(unit)
    assert len(chunks) > 2
    assert sum(chunk.meta.get("redactions", 0) for chunk in chunks) == count == 3


# --- through the pipeline ----------------------------------------------------------------------
@pytest.fixture
async def server() -> AsyncIterator[VoyageServer]:
    loopback = await VoyageServer().start()
    yield loopback
    await loopback.stop()


async def test_secrets_never_reach_voyage_and_counts_reach_status(
    tmp_path: Path, server: VoyageServer
) -> None:
    settings = make_settings(
        tmp_path,
        embedding_provider="voyage",
        voyage_api_key=server.api_key,
        voyage_base_url=server.base_url,
    )
    assert settings.read.redaction_enabled
    engine = Engine(settings)
    await engine.open("test")
    try:
        path = settings.watch.conversations_dirs[0] / "p" / "secrets.jsonl"
        path.parent.mkdir(parents=True)
        session = ClaudeSession(9, "secrets")
        lines = [
            *session.lines(2),
            session.user(f"my key is {OPENAI} and the db is postgres://app:pa55word@db:5432/x"),
            session.tool_result("t1", f"AWS_SECRET_ACCESS_KEY={AWS_SECRET}\nGITHUB_TOKEN={GITHUB}\n"),
            session.user("Please reset your password: the old one expired."),
        ]
        path.write_bytes(dump(lines))
        job = await engine.submit(path)
        assert isinstance(job, FileJob)
        await asyncio.wait_for(job.done.wait(), 30)
        assert job.outcome is not None and job.outcome.status == "done"
        sent = "\n".join(text for request in server.requests for text in request.texts)
        for secret in (OPENAI, "pa55word", AWS_SECRET, GITHUB):
            assert secret not in sent, "a secret was sent to the embedding API"
        assert "[REDACTED:openai-key]" in sent and "reset your password" in sent
        rows = await engine.store.scroll_all("conversations", ["text", "redactions"])
        stored = "\n".join(str(payload["text"]) for _, payload in rows)
        assert AWS_SECRET not in stored and "[REDACTED:aws-secret-key]" in stored
        per_chunk = [int(payload.get("redactions") or 0) for _, payload in rows]
        assert sum(per_chunk) == 4
        status = await engine.status()
        assert status["redactions"] == {str(path): 4}
    finally:
        await engine.close()
