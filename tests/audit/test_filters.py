from __future__ import annotations

import pytest

from audit import filters
from audit.filters import CONTEXT_CHECKS, Candidate, false_positive
from tests.audit.fakes import FAKES


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("AKIAIOSFODNN7EXAMPLE", True),
        ("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", True),
        ("AKIAI44QH8DHBEXAMPLE", True),
        ("sk_test_4eC39HqLyjWDarjtT1zdp7dc", True),
        ("my-example-token", True),
        (FAKES["aws_id"], False),
        (FAKES["github"], False),
    ],
)
def test_is_documented_example(value: str, expected: bool) -> None:
    assert filters.is_documented_example(value) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("your-api-key-here", True),
        ("YOUR_API_KEY", True),
        ("<YOUR_TOKEN>", True),
        ("changeme", True),
        ("change_me_please", True),
        ("xxxxxxxxxxxxxxxx", True),
        ("sk_live_XXXXXXXXXXXXXXXXXXXXXXXX", True),
        ("********", True),
        ("password", True),
        ("token-goes-here", True),
        ("[REDACTED]", True),
        ("not-a-real-secret", True),
        ("...", True),
        (FAKES["password"], False),
        (FAKES["stripe"], False),
        ("hunter2hunter", False),
    ],
)
def test_is_placeholder(value: str, expected: bool) -> None:
    assert filters.is_placeholder(value) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("${DB_PASSWORD}", True),
        ("$API_TOKEN", True),
        ("{{ vault_password }}", True),
        ("%(password)s", True),
        ("{password}", True),
        ("@db.password@", True),
        ("%d,%d-%d,%d:", True),
        ("%s", True),
        ("k9%dTx!q", False),  # one directive inside a random password is just characters
        ("p$ssw0rd", False),
        (FAKES["password"], False),
    ],
)
def test_is_template(value: str, expected: bool) -> None:
    assert filters.is_template(value) is expected


@pytest.mark.parametrize(
    ("before", "expected"),
    [
        ('token = os.environ["', True),
        ("token = os.environ.get('", True),
        ('key = os.getenv("', True),
        ("const key = process.env.", True),
        ('token = ENV.fetch("', True),
        ('String pw = System.getenv("', True),
        ("$pw = $_ENV['", True),
        ('password = "', False),
        ("os.environ['X'] = '", False),
    ],
)
def test_is_env_lookup(before: str, expected: bool) -> None:
    assert filters.is_env_lookup(before) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("jane.doe@example.com", True),
        ("someone@mail.example.org", True),
        ("admin@test", True),
        ("user@yourdomain.com", True),
        ("noreply@github.com", True),
        ("bob@localhost", True),
        (FAKES["email"], False),
        ("guido@python.org", False),
    ],
)
def test_is_example_email(value: str, expected: bool) -> None:
    assert filters.is_example_email(value) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("192.168.1.1", True),
        ("127.0.0.1", True),
        ("169.254.1.1", True),
        ("0.0.0.0", True),
        ("192.0.2.44", True),  # documentation range
        ("224.0.0.251", True),  # multicast
        ("::1", True),
        ("fe80::1", True),
        ("2001:db8::1", True),  # documentation range
        ("1::2", True),  # reserved: what a slice a[1::2] looks like
        ("999.1.1.1", True),  # not an address
        ("8.8.8.8", False),
        (FAKES["ipv4"], False),
        (FAKES["ipv6"], False),
    ],
)
def test_is_non_public_ip(value: str, expected: bool) -> None:
    assert filters.is_non_public_ip(value) is expected


@pytest.mark.parametrize(
    ("before", "expected"),
    [
        ('__version__ = "', True),
        ("version: ", True),
        ("release ", True),
        ("v", True),
        ('server = "', False),
        ("dev = ", False),
    ],
)
def test_is_version_number(before: str, expected: bool) -> None:
    assert filters.is_version_number("8.8.4.4", before) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("123e4567-e89b-12d3-a456-426614174000", True),
        ("123E4567-E89B-12D3-A456-426614174000", True),
        (FAKES["hex"], False),
    ],
)
def test_is_uuid(value: str, expected: bool) -> None:
    assert filters.is_uuid(value) is expected


@pytest.mark.parametrize(
    ("value", "name", "line", "expected"),
    [
        ("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "sha256", "", True),
        (
            "d41d8cd98f00b204e9800998ecf8427e",
            None,
            'md5 = "d41d8cd98f00b204e9800998ecf8427e"',
            True,
        ),
        ("da39a3ee5e6b4b0d3255bfef95601890afd80709", "commit", "", True),
        (
            "sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg==",
            "integrity",
            "",
            True,
        ),
        (FAKES["hex"], "api_secret", 'api_secret = "x"', False),  # a digest's length, no hash word
        (FAKES["hex"][:37], "sha1", "", False),  # hash word, but not a digest's length
    ],
)
def test_is_checksum(value: str, name: str | None, line: str, expected: bool) -> None:
    assert filters.is_checksum(value, name, line) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("abcdefghijklmnop", True),
        ("0123456789", True),
        ("ABCDEF0123", True),
        ("123456789ABCDEFGH", True),
        ("qwerty123456", False),
        (FAKES["b64"], False),
        ("abc", False),  # too short to judge
    ],
)
def test_is_sequential(value: str, expected: bool) -> None:
    assert filters.is_sequential(value) is expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("token_type", True),
        ("passwordField", True),
        ("PASSWORD_FILE", True),
        ("secret_key_name", True),
        ("tokenizer.encode", True),
        ("pad_token", True),
        ('os.environ["DB_PASSWORD_HASH"]', True),
        ("password", False),
        ("API_TOKEN", False),
        ("self.client_secret", False),
        (None, False),
    ],
)
def test_is_benign_name(name: str | None, expected: bool) -> None:
    assert filters.is_benign_name(name) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("null", True), ("abc", True), ("two words", True), ("|", True),
     ("s3cr3t!x", False)],
)  # fmt: skip
def test_is_not_a_value(value: str, expected: bool) -> None:
    assert filters.is_not_a_value(value) is expected


def test_is_lock_file() -> None:
    assert filters.is_lock_file("web/package-lock.json")
    assert filters.is_lock_file("poetry.lock")
    assert not filters.is_lock_file("src/lock.py")


def _candidate(value: str, secret_type: str, line: str | None = None, **kw: object) -> Candidate:
    line = line if line is not None else f'x = "{value}"'
    return Candidate(
        value=value,
        secret_type=secret_type,
        line=line,
        column=line.index(value),
        filename=str(kw.get("filename", "a.py")),
        name=kw.get("name"),  # type: ignore[arg-type]
    )


def test_checks_apply_by_type() -> None:
    """A UUID is dropped as a high-entropy string but kept as an assigned API key."""
    uuid = "123e4567-e89b-12d3-a456-426614174000"
    assert false_positive(_candidate(uuid, "Base64 High Entropy String")) == "UUID"
    assert false_positive(_candidate(uuid, "Secret Keyword")) is None
    # a private key's dashes are not a placeholder
    assert false_positive(_candidate(FAKES["pem"], "Private Key", line=FAKES["pem"])) is None
    # an example e-mail domain means nothing to a token detector
    assert false_positive(_candidate("x@example.com", "Email Address")) == "example e-mail"


def test_context_checks_use_the_name() -> None:
    digest = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    hashed = _candidate(digest, "Hex High Entropy String", name="expected_sha256")
    assert false_positive(hashed, CONTEXT_CHECKS) == "checksum"
    benign = _candidate("bearer-xyz", "Secret Keyword", name="token_type")
    assert false_positive(benign, CONTEXT_CHECKS) == "benign name"
    kept = _candidate(FAKES["password"], "Secret Keyword", name="password")
    assert false_positive(kept, CONTEXT_CHECKS) is None


def test_candidate_repr_hides_the_value() -> None:
    candidate = _candidate(FAKES["github"], "GitHub Token")
    assert FAKES["github"] not in repr(candidate)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("#add-password", True),
        ("/forgot-password", True),
        ("arn:aws:iam::aws:policy/IAMUserChangePassword", True),
        ("cms_user_password", True),
        ("'$PRECOMPILE_PASSWORD'", True),
        ("hunter2-xk", False),
        ("k3y9a7b2c4d6e8f0", False),  # random lower-case text holding `key` stays
        ("keyboard", False),
    ],
)
def test_is_not_a_value_sees_references(value: str, expected: bool) -> None:
    assert filters.is_not_a_value(value) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("sntryu_" + "a" * 64, True),
        ("glc_" + "1" * 40 + "=", True),
        ("A" * 22 + "jU6xYybuV9XFdTUJHQgfosL7hZldylSJK6vUjw78Hb", False),  # a bearer's prefix
        ("k3y9a7b2c4d6e8f0aa11bb", False),
    ],
)
def test_is_low_diversity_sees_long_runs(value: str, expected: bool) -> None:
    assert filters.is_low_diversity(value) is expected


@pytest.mark.parametrize("name", ["schemaKey", "bucket_key", "primaryKey", "UserSecretsId"])
def test_database_keys_and_ids_are_benign_names(name: str) -> None:
    assert filters.is_benign_name(name)
