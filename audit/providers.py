"""Provider token formats: one table row per format, written for this project.

Three kinds of row:

- `prefixed`: a token that starts with a published literal prefix (`ghp_`, `glc_`,
  `hvs.`). The scanner finds the prefix with its keyword automaton and matches the
  row's regex *at* that position, so a row costs nothing on text without its prefix.
- `named`: a token with no prefix of its own (a 32-character hex key), recognised when
  it is assigned to a name that says which provider it belongs to (`ALGOLIA_API_KEY =`).
- `shaped`: a format with a distinctive literal inside it (`…T3BlbkFJ…`, `…Q~…`),
  searched on the lines that hold that literal.

Every regex is matched against the original text; keywords are the lower-case literals
the prefilter looks for. A match's group `s` (or the whole match) is the secret.
`shape` is a redacted description of the format for the docs: never a real value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

AN = "A-Za-z0-9"  # alphanumeric
URL = "A-Za-z0-9_\\-"  # URL-safe base64 alphabet
B64 = "A-Za-z0-9+/"  # standard base64 alphabet
HEX = "0-9a-f"
HEXI = "0-9A-Fa-f"
UUID = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_BEFORE = r"(?<![A-Za-z0-9_\-])"  # a token never continues a longer word
_AFTER = r"(?![A-Za-z0-9_\-])"
_AFTER_B64 = r"(?![A-Za-z0-9_\-+/=])"
# A name, then an assignment operator of some language, then an optional quote.
_ASSIGN = r"[\"'\]]{0,2}[ \t]*(?:=|:=|::=|\?=|=>|:|,|\.=)[ \t]*(?:[rbuRBU]?[\"'`])?[ \t]*"


@dataclass(frozen=True)
class Rule:
    """One token format: how to find it, and how to describe it without showing one."""

    name: str  # the detector name (`--detector`, policies)
    secret_type: str  # the finding's secret_type
    pattern: str
    keywords: tuple[str, ...]  # lower-case literals, one of which every match holds
    shape: str  # redacted description for the docs
    anchored: bool = False  # every match starts at one of the keywords

    def compile(self) -> re.Pattern[str]:
        return re.compile(self.pattern)


def n(cls: str, low: int, high: int | None = None) -> str:
    """`[cls]{low}` or `[cls]{low,high}`."""
    return f"[{cls}]{{{low}}}" if high is None else f"[{cls}]{{{low},{high}}}"


def prefixed(
    name: str,
    kind: str,
    prefixes: tuple[str, ...],
    body: str,
    shape: str,
    *,
    after: str = _AFTER,
    before: str = _BEFORE,
) -> Rule:
    """A token made of a literal prefix and a body."""
    alternatives = "|".join(re.escape(p) for p in prefixes)
    pattern = f"{before}(?:{alternatives}){body}{after}"
    keywords = tuple(sorted({p.lower() for p in prefixes}))
    return Rule(name, kind, pattern, keywords, shape, anchored=True)


def named(name: str, kind: str, names: tuple[str, ...], value: str, shape: str) -> Rule:
    """A value of a given shape assigned to a name that holds one of `names`."""
    alternatives = "|".join(re.escape(x) for x in names)
    # the provider's name is a word of the variable name: `SUMO_KEY`, `sumoKey`, not
    # `sumOfExposures`, `rookTable` or `cameraKit`
    head = (
        rf"(?<![A-Za-z0-9])[\w.\-]{{0,40}}?(?:(?<![A-Za-z])|(?<=[a-z])(?=[A-Z])|(?<=-D))"
        rf"(?i:{alternatives})(?![a-z])[\w.\-]{{0,30}}?"
    )
    pattern = rf"{head}{_ASSIGN}(?P<s>{value}){_AFTER}"
    return Rule(name, kind, pattern, tuple(x.lower() for x in names), shape)


def shaped(name: str, kind: str, pattern: str, keywords: tuple[str, ...], shape: str) -> Rule:
    """A format with a distinctive literal somewhere inside it."""
    return Rule(name, kind, pattern, keywords, shape)


P, N, S = prefixed, named, shaped

RULES: tuple[Rule, ...] = (
    # -- source hosting and package registries ------------------------------------------
    P(
        "GitHubTokenDetector",
        "GitHub Token",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"),
        n(AN, 36),
        "`ghp_`/`gho_`/`ghu_`/`ghs_`/`ghr_` + 36 alphanumerics",
    ),
    P(
        "GitHubFineGrainedTokenDetector",
        "GitHub Token",
        ("github_pat_",),
        n(AN + "_", 82),
        "`github_pat_` + 82 alphanumerics and `_`",
    ),
    P(
        "GitLabTokenDetector",
        "GitLab Token",
        (
            "glpat-",
            "gldt-",
            "glft-",
            "glsoat-",
            "glrt-",
            "gloas-",
            "glcbt-",
            "glimt-",
            "glagent-",
            "glffct-",
            "glptt-",
        ),
        n(URL, 20, 300) + r"(?:\.[0-9a-z]{9})?",
        "`glpat-`, `glrt-`, `gldt-`… + 20+ URL-safe characters, optionally `.` + 9 (routable)",
    ),
    P(
        "GitLabRunnerRegistrationTokenDetector",
        "GitLab Token",
        ("GR1348941",),
        n(URL, 20),
        "`GR1348941` + 20 URL-safe characters",
    ),
    S(
        "GitLabSessionCookieDetector",
        "GitLab Token",
        r"_gitlab_session=(?P<s>[0-9a-z]{32})\b",
        ("_gitlab_session=",),
        "`_gitlab_session=` + 32 lower-case alphanumerics",
    ),
    P(
        "BitbucketAppPasswordDetector",
        "Bitbucket Token",
        ("ATBB", "ATCTT3"),
        n(URL + "=.", 32, 300),
        "`ATBB` + 32+ URL-safe characters",
    ),
    N(
        "BitbucketCredentialDetector",
        "Bitbucket Token",
        ("bitbucket",),
        f"{n('a-z0-9', 32)}|{n('a-z0-9=_-', 64)}",
        "32 or 64 characters named `bitbucket…`",
    ),
    P("NpmTokenDetector", "NPM tokens", ("npm_",), n(AN, 36), "`npm_` + 36 alphanumerics"),
    S(
        "NpmDetector",
        "NPM tokens",
        r"(?i:_authToken)\s*=\s*(?P<s>[A-Za-z0-9_\-+/=.]{20,200})",
        ("_authtoken",),
        "`_authToken=` + 20+ characters (`.npmrc`)",
    ),
    P(
        "PypiTokenDetector",
        "PyPI Token",
        ("pypi-AgEIcHlwaS5vcmc", "pypi-AgENdGVzdC5weXBpLm9yZw"),
        n(URL, 50, 1000),
        "`pypi-AgEIcHlwaS5vcmc` + 50+ URL-safe characters",
    ),
    P(
        "RubyGemsTokenDetector",
        "RubyGems Token",
        ("rubygems_",),
        n(HEX, 48),
        "`rubygems_` + 48 hex",
    ),
    P(
        "ClojarsTokenDetector",
        "Clojars Token",
        ("CLOJARS_",),
        n("a-z0-9", 60),
        "`CLOJARS_` + 60 lower-case alphanumerics",
    ),
    P(
        "ArtifactoryDetector",
        "Artifactory Credentials",
        ("AKCp",),
        n(AN, 69),
        "`AKCp` + 69 alphanumerics",
    ),
    P(
        "ArtifactoryReferenceTokenDetector",
        "Artifactory Credentials",
        ("cmVmd",),
        n(AN, 59),
        "`cmVmd` + 59 alphanumerics",
    ),
    N(
        "JFrogCredentialDetector",
        "Artifactory Credentials",
        ("jfrog", "artifactory", "bintray", "xray"),
        f"{n(AN, 73)}|{n(AN, 64)}",
        "64 or 73 alphanumerics named `jfrog…`/`artifactory…`",
    ),
    P(
        "DockerHubTokenDetector",
        "Docker Hub Token",
        ("dckr_pat_", "dckr_oat_"),
        n(URL, 27, 36),
        "`dckr_pat_`/`dckr_oat_` + 27+ URL-safe characters",
    ),
    P(
        "CratesIoTokenDetector",
        "crates.io Token",
        ("cio",),
        n(AN, 32),
        "`cio` + 32 alphanumerics",
    ),
    P(
        "DependencyTrackKeyDetector",
        "Dependency-Track API Key",
        ("odt_",),
        n(AN, 32, 255),
        "`odt_` + 32+ alphanumerics",
    ),
    S(
        "PasswordHashDetector",
        "Password Hash",
        r"(?<![\w$])(?P<s>\$[156]\$(?:rounds=\d{1,9}\$)?[./A-Za-z0-9]{1,16}\$[./A-Za-z0-9]{22,86}"
        r"|\$2[abxy]?\$\d\d\$[./A-Za-z0-9]{53}"
        r"|\$[789]\$[./A-Za-z0-9]{8,40}\$[./A-Za-z0-9]{43}"
        r"|\$krb5(?:asrep|tgs)\$\d{1,3}\$(?:[^$\s]{1,256}[:$])?[0-9a-fA-F]{32}\$[0-9a-fA-F]{64,})"
        r"(?![\w./$])",
        ("$1$", "$2a$", "$2b$", "$2x$", "$2y$", "$2$", "$5$", "$6$", "$7$", "$8$", "$9$", "$krb5"),
        "crypt(3) hashes (`$1$`, `$2b$`, `$5$`, `$6$`, `$8$` + salt `$` + hash), "
        "Kerberos `$krb5asrep$`/`$krb5tgs$`",
    ),
    P(
        "NuGetApiKeyDetector",
        "NuGet API Key",
        ("oy2",),
        n("a-z0-9", 43),
        "`oy2` + 43 lower-case alphanumerics",
    ),
    S(
        "VaultUnsealKeyDetector",
        "HashiCorp Vault Unseal Key",
        r"(?i:unseal key \d{1,2}:|operator unseal)[ \t]+(?P<s>[A-Za-z0-9+/]{43,44}={0,2})"
        r"(?![A-Za-z0-9+/=])",
        ("unseal",),
        "`Unseal Key N:` or `vault operator unseal` + 44 base64 characters",
    ),
    # -- cloud platforms ------------------------------------------------------------------
    P(
        "AWSKeyDetector",
        "AWS Access Key",
        ("AKIA", "ASIA", "ABIA", "ACCA", "A3T"),
        r"[A-Z0-9]{16,17}",
        "`AKIA`/`ASIA`/`ABIA`/`ACCA` + 16 upper-case alphanumerics",
    ),
    N(
        "AWSSecretKeyDetector",
        "AWS Access Key",
        ("aws_secret", "awssecret", "secret_access_key", "secretaccesskey", "aws-secret"),
        n(B64, 40) + r"(?![A-Za-z0-9+/=])",
        "40 base64 characters named `aws_secret_access_key`",
    ),
    P(
        "AWSBedrockKeyDetector",
        "AWS Bedrock API Key",
        ("ABSK",),
        n(B64, 109, 269) + "={0,2}",
        "`ABSK` + 109–269 base64 characters",
        after=_AFTER_B64,
    ),
    P(
        "AWSBedrockShortTermKeyDetector",
        "AWS Bedrock API Key",
        ("bedrock-api-key-YmVkcm9jay5hbWF6b25hd3MuY29t",),
        n(B64 + "=_-", 20, 2000),
        "`bedrock-api-key-` + base64",
        after=_AFTER_B64,
    ),
    S(
        "AzureADClientSecretDetector",
        "Azure AD Client Secret",
        r"(?<![\w~.\-])(?P<s>[A-Za-z0-9_~.]{3}\dQ~[A-Za-z0-9_~.\-]{31,34})(?![\w~.\-])",
        ("q~",),
        "3 characters, a digit, `Q~`, 31–34 characters",
    ),
    S(
        "AzureStorageKeyDetector",
        "Azure Storage Account access key",
        r"(?i:AccountKey)=(?P<s>[A-Za-z0-9+/]{86}==)",
        ("accountkey=",),
        "`AccountKey=` + 86 base64 characters + `==`",
    ),
    P(
        "GoogleApiKeyDetector",
        "Google API Key",
        ("AIza",),
        n(URL, 35),
        "`AIza` + 35 URL-safe characters",
    ),
    P(
        "GoogleOAuthSecretDetector",
        "Google OAuth Client Secret",
        ("GOCSPX-",),
        n(URL, 28),
        "`GOCSPX-` + 28 URL-safe characters",
    ),
    P(
        "AlibabaAccessKeyDetector",
        "Alibaba Cloud Access Key",
        ("LTAI",),
        n(AN, 12, 20),
        "`LTAI` + 12–20 alphanumerics",
    ),
    N(
        "AlibabaSecretKeyDetector",
        "Alibaba Cloud Access Key",
        ("alibaba", "aliyun"),
        n(AN, 30),
        "30 alphanumerics named `alibaba…`",
    ),
    P(
        "DigitalOceanTokenDetector",
        "DigitalOcean Token",
        ("dop_v1_", "doo_v1_", "dor_v1_"),
        n(HEX, 64),
        "`dop_v1_`/`doo_v1_`/`dor_v1_` + 64 hex",
    ),
    N("HerokuApiKeyDetector", "Heroku API Key", ("heroku",), UUID, "a UUID named `heroku…`"),
    P(
        "HerokuTokenDetector",
        "Heroku API Key",
        ("HRKU-AA",),
        n(URL, 58),
        "`HRKU-AA` + 58 URL-safe characters",
    ),
    P("FlyioTokenDetector", "Fly.io Token", ("fo1_",), n(URL, 43), "`fo1_` + 43 characters"),
    P(
        "FlyioMacaroonDetector",
        "Fly.io Token",
        ("fm1a_", "fm1r_", "fm2_"),
        n(B64, 100, 4000) + "={0,3}",
        "`fm1a_`/`fm1r_`/`fm2_` + 100+ base64",
        after=_AFTER_B64,
    ),
    P(
        "PlanetScaleTokenDetector",
        "PlanetScale Token",
        ("pscale_tkn_", "pscale_oauth_", "pscale_pw_"),
        n(URL + "=.", 32, 64),
        "`pscale_tkn_`/`pscale_oauth_`/`pscale_pw_` + 32–64 characters",
    ),
    P(
        "DatabricksTokenDetector",
        "Databricks Token",
        ("dapi",),
        n(HEX, 32) + r"(?:-\d)?",
        "`dapi` + 32 hex",
    ),
    S(
        "HashiCorpTerraformTokenDetector",
        "HashiCorp Terraform Token",
        rf"{_BEFORE}(?P<s>{n(AN, 14)}\.atlasv1\.{n(URL + '=', 60, 70)}){_AFTER}",
        ("atlasv1",),
        "14 alphanumerics + `.atlasv1.` + 60–70 characters",
    ),
    P(
        "VaultTokenDetector",
        "HashiCorp Vault Token",
        ("hvs.", "hvb.", "hvr."),
        n(URL, 90, 300),
        "`hvs.`/`hvb.`/`hvr.` + 90+ URL-safe characters",
    ),
    N(
        "VaultLegacyTokenDetector",
        "HashiCorp Vault Token",
        ("vault",),
        r"s\." + n(AN, 24),
        "`s.` + 24 alphanumerics named `vault…`",
    ),
    P(
        "OpenShiftTokenDetector",
        "OpenShift Token",
        ("sha256~",),
        n(URL, 43),
        "`sha256~` + 43 URL-safe characters",
    ),
    P(
        "CloudflareOriginCAKeyDetector",
        "Cloudflare API Key",
        ("v1.0-",),
        n(HEX, 24) + "-" + n(HEX, 146),
        "`v1.0-` + 24 hex + `-` + 146 hex",
    ),
    N(
        "CloudflareApiKeyDetector",
        "Cloudflare API Key",
        ("cloudflare", "cf_api"),
        f"{n(URL, 40)}|{n(HEX, 37)}",
        "40 URL-safe characters or 37 hex named `cloudflare…`",
    ),
    N(
        "NetlifyTokenDetector",
        "Netlify Token",
        ("netlify",),
        n(URL + "=", 40, 46),
        "40–46 characters named `netlify…`",
    ),
    P("PulumiTokenDetector", "Pulumi Token", ("pul-",), n(HEX, 40), "`pul-` + 40 hex"),
    P(
        "ScalingoTokenDetector",
        "Scalingo Token",
        ("tk-us-",),
        n(URL, 48),
        "`tk-us-` + 48 URL-safe characters",
    ),
    P(
        "DopplerTokenDetector",
        "Doppler Token",
        ("dp.pt.", "dp.st.", "dp.sa.", "dp.ct.", "dp.scim.", "dp.audit."),
        n(AN, 40, 44),
        "`dp.pt.`/`dp.st.`… + 43 alphanumerics",
    ),
    P(
        "DefinedNetworkingTokenDetector",
        "Defined Networking Token",
        ("dnkey-",),
        n(URL + "=", 26) + "-" + n(URL + "=", 52),
        "`dnkey-` + 26 + `-` + 52 characters",
    ),
    P(
        "InfracostTokenDetector",
        "Infracost Token",
        ("ico-",),
        n(AN, 32),
        "`ico-` + 32 alphanumerics",
        before=r"(?<![A-Za-z0-9_\-.])",  # not a file name's `.ico-<hash>`
    ),
    P(
        "HarnessTokenDetector",
        "Harness Token",
        ("pat.", "sat."),
        n(URL, 22) + r"\." + n(AN, 24) + r"\." + n(AN, 20),
        "`pat.`/`sat.` + 22 `.` 24 `.` 20",
    ),
    P("PrefectTokenDetector", "Prefect Token", ("pnu_",), n(AN, 36), "`pnu_` + 36 alphanumerics"),
    P(
        "DroneCITokenDetector",
        "Drone CI Token",
        ("drone_",),
        n(AN, 32),
        "`drone_` + 32 alphanumerics",
    ),
    N(
        "DroneCINamedTokenDetector",
        "Drone CI Token",
        ("droneci", "drone_token"),
        n(AN, 32),
        "32 alphanumerics named `droneci…`",
    ),
    N(
        "TravisCITokenDetector",
        "Travis CI Token",
        ("travis",),
        n(AN, 22),
        "22 alphanumerics named `travis…`",
    ),
    N(
        "CodecovTokenDetector",
        "Codecov Token",
        ("codecov",),
        f"{UUID}|{n(AN, 32)}",
        "a UUID or 32 alphanumerics named `codecov…`",
    ),
    P(
        "SonarTokenDetector",
        "SonarQube Token",
        ("squ_", "sqp_", "sqa_"),
        n(HEXI, 40),
        "`squ_`/`sqp_`/`sqa_` + 40 hex",
    ),
    N(
        "SonarNamedTokenDetector",
        "SonarQube Token",
        ("sonar_token", "sonar.login", "sonar_login", "sonar-token", "sonar.token"),
        n(AN, 40),
        "40 alphanumerics named `sonar.login`",
    ),
    N("SnykTokenDetector", "Snyk Token", ("snyk",), UUID, "a UUID named `snyk…`"),
    P(
        "SourcegraphTokenDetector",
        "Sourcegraph Token",
        ("sgp_",),
        rf"(?:(?:{n(HEXI, 16)}|local)_)?{n(HEXI, 40)}",
        "`sgp_` (+ 16 hex `_`) + 40 hex",
    ),
    P(
        "Intra42SecretDetector",
        "42 Intra Client Secret",
        ("s-s4t2ud-", "s-s4t2af-"),
        n(HEX, 64),
        "`s-s4t2ud-` + 64 hex",
    ),
    # -- AI and data ---------------------------------------------------------------------
    P(
        "OpenAIProjectKeyDetector",
        "OpenAI Token",
        ("sk-proj-", "sk-svcacct-", "sk-admin-"),
        n(URL, 40, 200),
        "`sk-proj-`/`sk-svcacct-`/`sk-admin-` + 40+ URL-safe characters",
    ),
    S(
        "OpenAIDetector",
        "OpenAI Token",
        rf"{_BEFORE}sk-{n(AN, 20)}T3BlbkFJ{n(AN, 20)}{_AFTER}",
        ("t3blbkfj",),
        "`sk-` + 20 + `T3BlbkFJ` + 20 alphanumerics",
    ),
    P(
        "AnthropicKeyDetector",
        "Anthropic API Key",
        ("sk-ant-api03-", "sk-ant-admin01-", "sk-ant-oat01-", "sk-ant-ort01-"),
        n(URL, 80, 120),
        "`sk-ant-api03-` + 80–120 characters",
    ),
    P(
        "HuggingFaceTokenDetector",
        "Hugging Face Token",
        ("hf_", "api_org_"),
        n(AN, 30, 40),
        "`hf_`/`api_org_` + 34 letters",
    ),
    P(
        "TavilyKeyDetector",
        "Tavily API Key",
        ("tvly-",),
        r"(?:dev-|prod-)?" + n(AN, 32),
        "`tvly-` (+ `dev-`/`prod-`) + 32 alphanumerics",
    ),
    P(
        "PerplexityKeyDetector",
        "Perplexity API Key",
        ("pplx-",),
        n(AN, 48),
        "`pplx-` + 48 alphanumerics",
    ),
    N(
        "CohereKeyDetector",
        "Cohere API Key",
        ("cohere", "co_api_key"),
        n(AN, 40),
        "40 alphanumerics named `cohere…`/`CO_API_KEY`",
    ),
    N(
        "PrivateAIKeyDetector",
        "Private AI API Key",
        ("private_ai", "private-ai", "privateai"),
        n(AN, 32),
        "32 alphanumerics named `private_ai…`",
    ),
    P(
        "ClickHouseKeyDetector",
        "ClickHouse Cloud Key",
        ("4b1d",),
        n(AN, 38),
        "`4b1d` + 38 alphanumerics",
    ),
    P(
        "ReadmeKeyDetector",
        "ReadMe API Key",
        ("rdme_",),
        n("a-z0-9", 70),
        "`rdme_` + 70 lower-case alphanumerics",
    ),
    P(
        "TypeformTokenDetector",
        "Typeform Token",
        ("tfp_",),
        n(URL + ".=", 59),
        "`tfp_` + 59 characters",
    ),
    P(
        "FrameioTokenDetector",
        "Frame.io Token",
        ("fio-u-",),
        n(URL + "=", 64),
        "`fio-u-` + 64 characters",
    ),
    P(
        "NotionTokenDetector",
        "Notion Token",
        ("ntn_",),
        n("0-9", 11) + n(AN, 35),
        "`ntn_` + 11 digits + 35 alphanumerics",
    ),
    P(
        "NotionLegacyTokenDetector",
        "Notion Token",
        ("secret_",),
        n(AN, 43),
        "`secret_` + 43 alphanumerics",
    ),
    P(
        "LinearKeyDetector",
        "Linear API Key",
        ("lin_api_",),
        n(AN, 40),
        "`lin_api_` + 40 alphanumerics",
    ),
    N(
        "LinearSecretDetector",
        "Linear API Key",
        ("linear_client", "linear_secret", "linear_api", "linear_token", "linear_key"),
        n(HEX, 32),
        "32 hex named `linear_client_secret`",
    ),
    P(
        "AgeSecretKeyDetector",
        "Age Secret Key",
        ("AGE-SECRET-KEY-1",),
        "[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}",
        "`AGE-SECRET-KEY-1` + 58 bech32 characters",
    ),
    P(
        "OnePasswordSecretKeyDetector",
        "1Password Secret Key",
        ("A3-",),
        r"[A-Z0-9]{6}-(?:[A-Z0-9]{11}|[A-Z0-9]{6}-[A-Z0-9]{5})(?:-[A-Z0-9]{5}){3}",
        "`A3-` + groups of 6, 11 (or 6-5), 5, 5, 5",
    ),
    P(
        "OnePasswordServiceTokenDetector",
        "1Password Service Account Token",
        ("ops_eyJ",),
        n(B64, 250, 4000) + "={0,3}",
        "`ops_eyJ` + 250+ base64",
        after=_AFTER_B64,
    ),
    # -- messaging and collaboration -----------------------------------------------------
    P(
        "SlackTokenDetector",
        "Slack Token",
        (
            "xoxb-",
            "xoxp-",
            "xoxa-",
            "xoxr-",
            "xoxs-",
            "xoxo-",
            "xoxe-",
            "xoxe.xoxb-",
            "xoxe.xoxp-",
            "xapp-",
        ),
        r"(?:\d{1,13}-)+[A-Za-z0-9]{8,}(?:-[A-Za-z0-9]+)*|[A-Za-z0-9]{8,48}",
        "`xoxb-`/`xoxp-`/`xapp-`… + digit groups + an alphanumeric tail",
    ),
    S(
        "SlackWebhookDetector",
        "Slack Token",  # detect-secrets' type for Slack webhooks too
        r"(?P<s>(?:https?://)?hooks\.slack\.com/(?:services|workflows|triggers)/"
        r"[A-Za-z0-9_/+\-]{20,120})",
        ("hooks.slack.com",),
        "`https://hooks.slack.com/services/T…/B…/` + 24 characters",
    ),
    S(
        "MicrosoftTeamsWebhookDetector",
        "Microsoft Teams Webhook",
        r"(?P<s>https://(?:[A-Za-z0-9\-]+\.webhook\.office\.com/webhookb2"
        r"|outlook\.office(?:365)?\.com/webhook)/[A-Za-z0-9\-]{36}@[A-Za-z0-9\-]{36}"
        r"/IncomingWebhook/[A-Za-z0-9]{32}/[A-Za-z0-9\-]{36}(?:/[A-Za-z0-9_\-]+)?)",
        ("webhook.office.com", "outlook.office"),
        "`https://…webhook.office.com/webhookb2/<uuid>@<uuid>/…`",
    ),
    S(
        "DiscordWebhookDetector",
        "Discord Webhook",
        r"(?P<s>https://(?:ptb\.|canary\.)?discord(?:app)?\.com/api/(?:v\d+/)?webhooks/\d{17,20}/"
        r"[A-Za-z0-9_\-]{60,72})",
        ("/webhooks/",),
        "`https://discord.com/api/webhooks/<id>/` + 68 characters",
    ),
    N(
        "DiscordSecretDetector",
        "Discord Bot Token",
        ("discord",),
        f"{n(HEX, 64)}|{n(URL, 32)}",
        "64 hex or 32 characters named `discord…`",
    ),
    S(
        "TelegramBotTokenDetector",
        "Telegram Bot Token",
        rf"(?<![\w:])(?P<s>\d{{5,16}}:AA{n(URL, 30, 34)}){_AFTER}",
        (":aa",),
        "5–16 digits + `:AA` + 30–34 characters",
    ),
    S(
        "AtlassianTokenDetector",
        "Atlassian API Token",
        rf"{_BEFORE}(?P<s>ATATT3{n(URL + '=', 186)})",
        ("atatt3",),
        "`ATATT3` + 186 characters",
    ),
    N(
        "AtlassianNamedTokenDetector",
        "Atlassian API Token",
        ("atlassian", "confluence", "jira"),
        n("a-z0-9", 24),
        "24 lower-case alphanumerics named `jira…`/`confluence…`",
    ),
    N(
        "AsanaSecretDetector",
        "Asana Client Secret",
        ("asana",),
        f"{n(AN, 32)}|{n('0-9', 16)}",
        "32 alphanumerics or 16 digits named `asana…`",
    ),
    N(
        "MattermostTokenDetector",
        "Mattermost Token",
        ("mattermost",),
        n("a-z0-9", 26),
        "26 lower-case alphanumerics named `mattermost…`",
    ),
    N(
        "GitterTokenDetector",
        "Gitter Token",
        ("gitter",),
        n(URL, 40),
        "40 characters named `gitter…`",
    ),
    N(
        "TrelloKeyDetector",
        "Trello Key",
        ("trello",),
        f"{n(HEX, 64)}|{n(HEX, 32)}",
        "32 or 64 hex named `trello…`",
    ),
    N(
        "TwitchTokenDetector",
        "Twitch Token",
        ("twitch",),
        n("a-z0-9", 30),
        "30 lower-case alphanumerics named `twitch…`",
    ),
    N(
        "TwitterSecretDetector",
        "Twitter Token",
        ("twitter",),
        rf"A{{22}}[A-Za-z0-9%]{{80,100}}|\d{{15,25}}-{n(AN, 20, 40)}|{n(AN, 50)}|{n(AN, 45)}"
        rf"|{n(AN, 25)}",
        "25/45/50 alphanumerics or `AAAA…` bearer named `twitter…`",
    ),
    P(
        "FacebookTokenDetector",
        "Facebook Token",
        ("EAAB", "EAAC", "EAAG", "EAAM", "EAAI"),
        n(AN, 90, 400),
        "`EAAC`/`EAAM`/`EAAG` + 90+ alphanumerics",
    ),
    N(
        "FacebookSecretDetector",
        "Facebook Token",
        ("facebook", "fb_app", "fb_secret"),
        rf"{n(HEX, 32)}|\d{{15,16}}[|%]{n(URL, 27, 40)}",
        "32 hex named `facebook…`",
    ),
    N(
        "LinkedInSecretDetector",
        "LinkedIn Client Secret",
        ("linkedin", "linked_in", "linked-in"),
        f"{n(AN, 16)}|{n(AN, 14)}",
        "14 or 16 alphanumerics named `linkedin…`",
    ),
    N(
        "IntercomTokenDetector",
        "Intercom Token",
        ("intercom",),
        n(URL + "=", 60),
        "60 characters named `intercom…`",
    ),
    N(
        "ZendeskSecretDetector",
        "Zendesk Secret",
        ("zendesk",),
        n(AN, 40),
        "40 alphanumerics named `zendesk…`",
    ),
    N(
        "SendbirdTokenDetector",
        "Sendbird Token",
        ("sendbird",),
        f"{n(HEX, 40)}|{UUID}",
        "40 hex or a UUID named `sendbird…`",
    ),
    N(
        "MessageBirdKeyDetector",
        "MessageBird API Key",
        ("messagebird", "message_bird", "message-bird"),
        f"{UUID}|{n(AN, 25)}",
        "25 alphanumerics or a UUID named `messagebird…`",
    ),
    P(
        "SendinblueKeyDetector",
        "Sendinblue API Key",
        ("xkeysib-", "xsmtpsib-"),
        n(HEX, 64) + "-" + n(AN, 16),
        "`xkeysib-` + 64 hex + `-` + 16 alphanumerics",
    ),
    P(
        "SendGridDetector",
        "SendGrid API Key",
        ("SG.",),
        n(URL, 22) + r"\." + n(URL, 43),
        "`SG.` + 22 `.` 43 characters",
    ),
    S(
        "MailchimpDetector",
        "Mailchimp Access Key",
        rf"{_BEFORE}(?P<s>{n(HEX, 32)}-us\d{{1,2}})\b",
        ("-us",),
        "32 hex + `-us` + a data-centre number",
    ),
    N(
        "MailgunKeyDetector",
        "Mailgun Key",
        ("mailgun",),
        rf"(?:pub)?key-{n(HEX, 32)}|{n('a-h0-9', 32)}-{n('a-h0-9', 8)}-{n('a-h0-9', 8)}",
        "`key-` + 32 hex, or a signing key, named `mailgun…`",
    ),
    P("TwilioKeyDetector", "Twilio API Key", ("SK",), n(HEXI, 32), "`SK` + 32 hex"),
    # -- payments and commerce -----------------------------------------------------------
    P(
        "StripeDetector",
        "Stripe Access Key",
        ("sk_live_", "sk_test_", "rk_live_", "rk_test_", "sk_prod_", "rk_prod_", "whsec_"),
        n(AN, 20, 247),
        "`sk_live_`/`rk_live_`/`sk_test_`/`whsec_` + 20+ alphanumerics",
    ),
    P(
        "SquareTokenDetector",
        "Square Token",
        ("sq0atp-", "EAAA"),
        n(URL, 22, 60),
        "`sq0atp-`/`EAAA` + 22–60 characters (access tokens)",
    ),
    P(
        "SquareOAuthDetector",
        "Square OAuth Secret",  # detect-secrets' type for the same format
        ("sq0csp-",),
        n(URL, 22, 60),
        "`sq0csp-` + 22–60 characters (OAuth application secrets)",
    ),
    P(
        "ShopifyTokenDetector",
        "Shopify Token",
        ("shpat_", "shpca_", "shppa_", "shpss_"),
        n(HEXI, 32),
        "`shpat_`/`shpca_`/`shppa_`/`shpss_` + 32 hex",
    ),
    P(
        "ShippoTokenDetector",
        "Shippo Token",
        ("shippo_live_", "shippo_test_"),
        n(HEXI, 40),
        "`shippo_live_` + 40 hex",
    ),
    P(
        "EasyPostTokenDetector",
        "EasyPost Token",
        ("EZAK", "EZTK"),
        n(AN, 54),
        "`EZAK`/`EZTK` + 54 alphanumerics",
    ),
    P(
        "DuffelTokenDetector",
        "Duffel Token",
        ("duffel_test_", "duffel_live_"),
        n(URL + "=", 43),
        "`duffel_live_` + 43 characters",
    ),
    P(
        "FlutterwaveKeyDetector",
        "Flutterwave Key",
        ("FLWSECK_TEST-", "FLWPUBK_TEST-", "FLWSECK-", "FLWPUBK-"),
        r"[a-hA-H0-9]{32}-X|[a-hA-H0-9]{12}",
        "`FLWSECK_TEST-` + 32 hex-like + `-X`",
    ),
    N(
        "FreemiusKeyDetector",
        "Freemius Secret Key",
        ("secret_key",),
        r"sk_[^\s\"'`]{29}",
        "`sk_` + 29 characters named `secret_key`",
    ),
    N(
        "PlaidSecretDetector",
        "Plaid Token",
        ("plaid",),
        rf"access-(?:sandbox|development|production)-{UUID}|{n('a-z0-9', 30)}|{n('a-z0-9', 24)}",
        "`access-production-<uuid>` or 24/30 characters named `plaid…`",
    ),
    N(
        "GoCardlessTokenDetector",
        "GoCardless Token",
        ("gocardless",),
        "live_" + n(URL + "=", 40),
        "`live_` + 40 characters named `gocardless…`",
    ),
    N(
        "CoinbaseTokenDetector",
        "Coinbase Token",
        ("coinbase",),
        n(URL, 64),
        "64 characters named `coinbase…`",
    ),
    N(
        "KrakenTokenDetector",
        "Kraken Token",
        ("kraken",),
        n(AN + "/=_+-", 80, 90),
        "80–90 base64 characters named `kraken…`",
    ),
    N(
        "KuCoinTokenDetector",
        "KuCoin Token",
        ("kucoin",),
        f"{UUID}|{n(HEX, 24)}",
        "24 hex or a UUID named `kucoin…`",
    ),
    N(
        "BittrexKeyDetector",
        "Bittrex Key",
        ("bittrex",),
        n(AN, 32),
        "32 alphanumerics named `bittrex…`",
    ),
    N(
        "FinicityTokenDetector",
        "Finicity Token",
        ("finicity",),
        f"{n(HEX, 32)}|{n(AN, 20)}",
        "32 hex or 20 alphanumerics named `finicity…`",
    ),
    N(
        "FinnhubTokenDetector",
        "Finnhub Token",
        ("finnhub",),
        n(AN, 20),
        "20 alphanumerics named `finnhub…`",
    ),
    N("EtsyTokenDetector", "Etsy Token", ("etsy",), n(AN, 24), "24 alphanumerics named `etsy…`"),
    N(
        "SquarespaceTokenDetector",
        "Squarespace Token",
        ("squarespace",),
        UUID,
        "a UUID named `squarespace…`",
    ),
    # -- observability and operations ----------------------------------------------------
    P(
        "GrafanaCloudTokenDetector",
        "Grafana Token",
        ("glc_",),
        n(B64, 32, 400) + "={0,3}",
        "`glc_` + 32–400 base64 characters",
        after=_AFTER_B64,
    ),
    P(
        "GrafanaServiceAccountTokenDetector",
        "Grafana Token",
        ("glsa_",),
        n(AN, 32) + "_" + n(HEXI, 8),
        "`glsa_` + 32 alphanumerics + `_` + 8 hex",
    ),
    P(
        "GrafanaApiKeyDetector",
        "Grafana Token",
        ("eyJrIjoi",),
        n(AN, 70, 400) + "={0,3}",
        "`eyJrIjoi` + 70+ base64 characters",
        after=_AFTER_B64,
    ),
    P("SentryTokenDetector", "Sentry Token", ("sntryu_",), n(HEX, 64), "`sntryu_` + 64 hex"),
    P(
        "SentryOrgTokenDetector",
        "Sentry Token",
        ("sntrys_eyJ",),
        n(B64, 40, 400) + "={0,2}_" + n(B64, 43),
        "`sntrys_eyJ…` + base64 + `_` + 43",
        after=r"(?![A-Za-z0-9+/])",
    ),
    N(
        "SentryNamedTokenDetector",
        "Sentry Token",
        ("sentry",),
        n(HEX, 64),
        "64 hex named `sentry…`",
    ),
    P(
        "NewRelicKeyDetector",
        "New Relic Key",
        ("NRAK-", "NRJS-", "NRII-", "NRAA-"),
        r"[A-Za-z0-9\-]{19,32}",
        "`NRAK-` + 27 / `NRJS-` + 19 / `NRII-` + 32 characters",
    ),
    N(
        "NewRelicNamedKeyDetector",
        "New Relic Key",
        ("newrelic", "new_relic", "new-relic"),
        n(AN, 64),
        "64 alphanumerics named `newrelic…`",
    ),
    P(
        "DynatraceTokenDetector",
        "Dynatrace Token",
        ("dt0c01.",),
        n(AN, 24) + r"\." + n(AN, 64),
        "`dt0c01.` + 24 `.` 64 alphanumerics",
    ),
    N(
        "DatadogKeyDetector",
        "Datadog Key",
        ("datadog", "dd_api_key", "dd_app_key", "dd_client"),
        f"{n(AN, 40)}|{n(HEX, 32)}",
        "32 hex or 40 alphanumerics named `datadog…`/`DD_API_KEY`",
    ),
    N(
        "SumoLogicKeyDetector",
        "Sumo Logic Key",
        ("sumo", "sumologic"),
        f"{n(AN, 64)}|su{n(AN, 12)}",
        "`su` + 12, or 64 alphanumerics named `sumo…`",
    ),
    N(
        "LaunchDarklyTokenDetector",
        "LaunchDarkly Token",
        ("launchdarkly", "launch_darkly"),
        n(URL + "=", 40),
        "40 characters named `launchdarkly…`",
    ),
    N(
        "FastlyTokenDetector",
        "Fastly Token",
        ("fastly",),
        n(URL + "=", 32),
        "32 characters named `fastly…`",
    ),
    N(
        "MerakiKeyDetector",
        "Cisco Meraki API Key",
        ("meraki",),
        n(HEX, 40),
        "40 hex named `meraki…`",
    ),
    N(
        "OktaTokenDetector",
        "Okta Token",
        ("okta",),
        "00" + n(URL + "=", 40),
        "`00` + 40 characters named `okta…`",
    ),
    P(
        "OctopusDeployKeyDetector",
        "Octopus Deploy API Key",
        ("API-",),
        "[A-Z0-9]{26}",
        "`API-` + 26 upper-case alphanumerics",
    ),
    P(
        "PostmanKeyDetector",
        "Postman API Key",
        ("PMAK-",),
        n(HEXI, 24) + "-" + n(HEXI, 34),
        "`PMAK-` + 24 hex + `-` + 34 hex",
    ),
    N(
        "RapidApiKeyDetector",
        "RapidAPI Key",
        ("rapidapi",),
        n(URL, 50),
        "50 characters named `rapidapi…`",
    ),
    N(
        "AlgoliaKeyDetector",
        "Algolia API Key",
        ("algolia",),
        n(AN, 32),
        "32 alphanumerics named `algolia…`",
    ),
    N(
        "AirtableKeyDetector",
        "Airtable Key",
        ("airtable",),
        f"key{n(AN, 14)}|{n(AN, 17)}",
        "`key` + 14 alphanumerics named `airtable…`",
    ),
    S(
        "AirtableTokenDetector",
        "Airtable Key",
        rf"{_BEFORE}(?P<s>pat{n(AN, 14)}\.{n(HEX, 64)}){_AFTER}",
        ("pat",),
        "`pat` + 14 alphanumerics + `.` + 64 hex",
    ),
    N(
        "AdafruitKeyDetector",
        "Adafruit API Key",
        ("adafruit", "aio_key"),
        f"aio_{n(AN, 28)}|{n(URL, 32)}",
        "`aio_` + 28, or 32 characters named `adafruit…`",
    ),
    N(
        "AdobeClientIdDetector",
        "Adobe Credentials",
        ("adobe",),
        n(HEX, 32),
        "32 hex named `adobe…`",
    ),
    P(
        "AdobeClientSecretDetector",
        "Adobe Credentials",
        ("p8e-",),
        n(AN, 32),
        "`p8e-` + 32 alphanumerics",
    ),
    S(
        "AuthressKeyDetector",
        "Authress Access Key",
        rf"{_BEFORE}(?P<s>(?:sc|ext|scauth|authress)_{n(AN, 5, 30)}\.{n(AN, 4, 6)}\.acc[_-]"
        rf"{n('a-z0-9-', 10, 32)}\.{n(B64 + '_=-', 30, 120)})",
        (".acc_", ".acc-"),
        "`sc_…` `.` … `.acc_` … `.` 30–120 characters",
    ),
    N(
        "BeamerTokenDetector",
        "Beamer Token",
        ("beamer",),
        "b_" + n(URL + "=", 44),
        "`b_` + 44 characters named `beamer…`",
    ),
    N(
        "ConfluentKeyDetector",
        "Confluent Key",
        ("confluent",),
        f"{n(AN, 64)}|{n(AN, 16)}",
        "16 or 64 alphanumerics named `confluent…`",
    ),
    N(
        "ContentfulTokenDetector",
        "Contentful Token",
        ("contentful",),
        n(URL + "=", 43),
        "43 characters named `contentful…`",
    ),
    N(
        "DropboxTokenDetector",
        "Dropbox Token",
        ("dropbox",),
        rf"sl\.{n(URL + '=', 130, 160)}|{n(AN, 11)}AAAAAAAAAA{n(URL + '=', 43)}|{n(AN, 15)}",
        "`sl.` + 135 characters, or 15 alphanumerics named `dropbox…`",
    ),
    N(
        "FlickrKeyDetector",
        "Flickr Key",
        ("flickr",),
        n(AN, 32),
        "32 alphanumerics named `flickr…`",
    ),
    N(
        "FreshbooksTokenDetector",
        "Freshbooks Token",
        ("freshbooks",),
        n(AN, 64),
        "64 alphanumerics named `freshbooks…`",
    ),
    N("HubSpotKeyDetector", "HubSpot Key", ("hubspot",), UUID, "a UUID named `hubspot…`"),
    P("HubSpotTokenDetector", "HubSpot Key", ("pat-na1-", "pat-eu1-"), UUID, "`pat-na1-` + a UUID"),
    N(
        "LobKeyDetector",
        "Lob API Key",
        ("lob",),
        rf"(?:live|test)_(?:pub_{n(HEX, 31)}|{n(HEX, 35)})",
        "`live_` + 35 hex named `lob…`",
    ),
    N(
        "LookerSecretDetector",
        "Looker Client Secret",
        ("looker",),
        f"{n(AN, 24)}|{n(AN, 20)}",
        "20 or 24 alphanumerics named `looker…`",
    ),
    S(
        "MapboxTokenDetector",
        "Mapbox Token",
        rf"{_BEFORE}(?P<s>[pst]k\.eyJ{n(URL, 20, 200)}\.{n(URL, 20, 60)}){_AFTER}",
        ("pk.eyj", "sk.eyj", "tk.eyj"),
        "`pk.eyJ…`/`sk.eyJ…` + `.` + 22 characters",
    ),
    S(
        "MaxMindKeyDetector",
        "MaxMind License Key",
        rf"{_BEFORE}(?P<s>{n(AN, 6)}_{n(AN, 29)}_mmk){_AFTER}",
        ("_mmk",),
        "6 + `_` + 29 alphanumerics + `_mmk`",
    ),
    N(
        "NYTimesTokenDetector",
        "New York Times Token",
        ("nytimes", "newyorktimes", "new-york-times"),
        n(URL + "=", 32),
        "32 characters named `nytimes…`",
    ),
    P(
        "SettleMintTokenDetector",
        "SettleMint Token",
        ("sm_aat_", "sm_pat_", "sm_sat_"),
        n(AN, 16),
        "`sm_pat_` + 16 alphanumerics",
    ),
    S(
        "SidekiqCredentialDetector",
        "Sidekiq Credentials",
        r"(?i:bundle_(?:enterprise|gems)__contribsys__com)[\"']?\s*[=:]\s*[\"']?"
        r"(?P<s>[0-9a-f]{8}:[0-9a-f]{8})\b|https?://(?P<u>[0-9a-f]{8}:[0-9a-f]{8})@"
        r"(?:gems|enterprise)\.contribsys\.com",
        ("contribsys",),
        "8 hex `:` 8 hex for `gems.contribsys.com`",
    ),
    N(
        "YandexKeyDetector",
        "Yandex Key",
        ("yandex",),
        rf"t1\.{n(URL, 1, 200)}=*\.{n(URL, 86)}=*|AQVN{n(URL, 35, 38)}|YC{n(URL, 38)}",
        "`AQVN` + 35–38, `YC` + 38, or `t1.` tokens named `yandex…`",
    ),
    # -- detect-secrets' provider plugins, rewritten --------------------------------------
    N(
        "CloudantDetector",
        "Cloudant Credentials",
        ("cloudant",),
        f"{n(HEX, 64)}|{n('a-z', 24)}",
        "64 hex or 24 letters named `cloudant…`",
    ),
    N(
        "IbmCloudIamDetector",
        "IBM Cloud IAM Key",
        ("ibm_cloud", "ibmcloud", "ibm-cloud", "iam_api"),
        n(URL, 44),
        "44 characters named `ibm_cloud_iam…`",
    ),
    N(
        "IbmCosHmacDetector",
        "IBM COS HMAC Credentials",
        ("cos_hmac", "ibm_cos", "hmac_secret"),
        n(HEX, 48),
        "48 hex named `cos_hmac…`",
    ),
    N(
        "SoftlayerDetector",
        "SoftLayer Credentials",
        ("softlayer",),
        n("a-z0-9", 64),
        "64 lower-case alphanumerics named `softlayer…`",
    ),
)
