"""Positive and negative cases for every registered detector, written from each
provider's documented format (not from our regexes), filled in from a seeded RNG.

A template marks the secret with `[[` and `]]`; `{A:36}` stands for 36 random
alphanumerics (see `FILL`). Nothing here is a real credential: every token is drawn
at random when the module is used, so this source holds no secret-shaped literal.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable

ALNUM = string.ascii_letters + string.digits
FILL: dict[str, str] = {
    "A": ALNUM,
    "a": string.ascii_lowercase + string.digits,
    "Z": string.ascii_uppercase + string.digits,
    "L": string.ascii_letters,
    "l": string.ascii_lowercase,
    "H": "0123456789abcdef",
    "X": "0123456789ABCDEF",
    "U": ALNUM + "_-",
    "B": ALNUM + "+/",
    "D": string.digits,
    "b": "qpzry9x8gf2tvdw0s3jn54khce6mua7l".upper(),
    "c": string.ascii_letters + string.digits + "./",  # crypt(3)'s alphabet
}
_FIELD = re.compile(r"\{(UUID|[A-Za-z]):?(\d*)\}")

# detector -> [(template, language)]: each must be found, at exactly the marked span.
POSITIVES: dict[str, list[tuple[str, str | None]]] = {
    "GitHubTokenDetector": [
        ('token = "[[ghp_{A:36}]]"', "python"),
        ("GH=[[gho_{A:36}]]", "dotenv"),
    ],
    "GitHubFineGrainedTokenDetector": [("token: [[github_pat_{A:22}_{A:59}]]", "yaml")],
    "GitLabTokenDetector": [
        ('GITLAB = "[[glpat-{U:20}]]"', "python"),
        ("CI_TOKEN=[[glpat-{U:27}.01{a:7}]]", "dotenv"),
        ("runner: [[glrt-t1_{U:27}.01{a:7}]]", "yaml"),
    ],
    "GitLabRunnerRegistrationTokenDetector": [("reg = '[[GR1348941{U:20}]]'", "python")],
    "GitLabSessionCookieDetector": [("Cookie: _gitlab_session=[[{a:32}]]", None)],
    "BitbucketAppPasswordDetector": [('BB = "[[ATBB{A:32}]]"', "python")],
    "BitbucketCredentialDetector": [('bitbucket_client_secret = "[[{a:64}]]"', "python")],
    "NpmTokenDetector": [("NPM_TOKEN: [[npm_{A:36}]]", "yaml")],
    "NpmDetector": [("//registry.npmjs.org/:_authToken=[[{UUID}]]", None)],
    "PypiTokenDetector": [("password = [[pypi-AgEIcHlwaS5vcmc{U:80}]]", "ini")],
    "RubyGemsTokenDetector": [('key = "[[rubygems_{H:48}]]"', "ruby")],
    "ClojarsTokenDetector": [("CLOJARS=[[CLOJARS_{a:60}]]", "dotenv")],
    "ArtifactoryDetector": [('ART = "[[AKCp{A:69}]]"', "python")],
    "ArtifactoryReferenceTokenDetector": [('ref = "[[cmVmd{A:59}]]"', "python")],
    "JFrogCredentialDetector": [('jfrog_api_key = "[[{A:73}]]"', "python")],
    "AWSKeyDetector": [('key_id = "[[AKIA{Z:16}]]"', "python"), ("id: [[ASIA{Z:12}2345]]", "yaml")],
    "AWSSecretKeyDetector": [("AWS_SECRET_ACCESS_KEY=[[{B:38}ab]]", "dotenv")],
    "AWSBedrockKeyDetector": [('k = "[[ABSK{B:120}]]"', "python")],
    "AWSBedrockShortTermKeyDetector": [
        ('k = "[[bedrock-api-key-YmVkcm9jay5hbWF6b25hd3MuY29t{B:60}]]"', "python")
    ],
    "AzureADClientSecretDetector": [('client_secret = "[[{A:3}8Q~{A:31}]]"', "python")],
    "AzureStorageKeyDetector": [
        ('conn = "AccountName=x;AccountKey=[[{B:86}==]];EndpointSuffix=core.windows.net"', "python")
    ],
    "GoogleApiKeyDetector": [('const key = "[[AIza{U:35}]]";', "javascript")],
    "GoogleOAuthSecretDetector": [('"client_secret": "[[GOCSPX-{U:28}]]",', "json")],
    "AlibabaAccessKeyDetector": [('id = "[[LTAI{A:20}]]"', "python")],
    "AlibabaSecretKeyDetector": [('alibaba_secret = "[[{A:30}]]"', "python")],
    "DigitalOceanTokenDetector": [("export DO=[[dop_v1_{H:64}]]", "bash")],
    "HerokuApiKeyDetector": [("HEROKU_API_KEY=[[{UUID}]]", "dotenv")],
    "HerokuTokenDetector": [('t = "[[HRKU-AA{U:58}]]"', "python")],
    "FlyioTokenDetector": [("FLY_API_TOKEN=[[fo1_{U:43}]]", "dotenv")],
    "FlyioMacaroonDetector": [('t = "[[fm2_{B:120}]]"', "python")],
    "PlanetScaleTokenDetector": [('pw = "[[pscale_pw_{U:43}]]"', "python")],
    "DatabricksTokenDetector": [('DATABRICKS = "[[dapi{H:32}]]"', "python")],
    "HashiCorpTerraformTokenDetector": [('token = "[[{A:14}.atlasv1.{U:64}]]"', "terraform")],
    "VaultTokenDetector": [("VAULT_TOKEN=[[hvs.{U:95}]]", "dotenv")],
    "VaultLegacyTokenDetector": [('vault_token = "[[s.{A:24}]]"', "python")],
    "OpenShiftTokenDetector": [("oc login --token=[[sha256~{U:43}]]", "bash")],
    "CloudflareOriginCAKeyDetector": [('k = "[[v1.0-{H:24}-{H:146}]]"', "python")],
    "CloudflareApiKeyDetector": [("CLOUDFLARE_API_TOKEN=[[{U:40}]]", "dotenv")],
    "NetlifyTokenDetector": [("netlify_auth_token: [[{U:43}]]", "yaml")],
    "PulumiTokenDetector": [("PULUMI_ACCESS_TOKEN=[[pul-{H:40}]]", "dotenv")],
    "ScalingoTokenDetector": [('t = "[[tk-us-{U:48}]]"', "python")],
    "DopplerTokenDetector": [("DOPPLER_TOKEN=[[dp.pt.{A:43}]]", "dotenv")],
    "DefinedNetworkingTokenDetector": [('k = "[[dnkey-{U:26}-{U:52}]]"', "python")],
    "InfracostTokenDetector": [("INFRACOST_API_KEY=[[ico-{A:32}]]", "dotenv")],
    "HarnessTokenDetector": [('k = "[[pat.{U:22}.{A:24}.{A:20}]]"', "python")],
    "PrefectTokenDetector": [("PREFECT_API_KEY=[[pnu_{A:36}]]", "dotenv")],
    "DroneCITokenDetector": [('t = "[[drone_{A:32}]]"', "python")],
    "DroneCINamedTokenDetector": [("DRONECI_TOKEN=[[{A:32}]]", "dotenv")],
    "TravisCITokenDetector": [("travis_token: [[{A:22}]]", "yaml")],
    "CodecovTokenDetector": [("CODECOV_TOKEN=[[{UUID}]]", "dotenv")],
    "SonarTokenDetector": [("sonar.token=[[squ_{H:40}]]", "ini")],
    "SonarNamedTokenDetector": [("sonar.login=[[{A:40}]]", "ini")],
    "SnykTokenDetector": [("SNYK_TOKEN=[[{UUID}]]", "dotenv")],
    "SourcegraphTokenDetector": [('t = "[[sgp_{H:16}_{H:40}]]"', "python")],
    "Intra42SecretDetector": [('s = "[[s-s4t2ud-{H:64}]]"', "python")],
    "OpenAIProjectKeyDetector": [("OPENAI_API_KEY=[[sk-proj-{U:64}]]", "dotenv")],
    "OpenAIDetector": [('openai.api_key = "[[sk-{A:20}T3BlbkFJ{A:20}]]"', "python")],
    "AnthropicKeyDetector": [('client = Anthropic(api_key="[[sk-ant-api03-{U:93}AA]]")', "python")],
    "HuggingFaceTokenDetector": [('login(token="[[hf_{L:34}]]")', "python")],
    "PerplexityKeyDetector": [("PPLX=[[pplx-{A:48}]]", "dotenv")],
    "CohereKeyDetector": [("CO_API_KEY=[[{A:40}]]", "dotenv")],
    "PrivateAIKeyDetector": [('private_ai_key = "[[{A:32}]]"', "python")],
    "ClickHouseKeyDetector": [('k = "[[4b1d{A:38}]]"', "python")],
    "ReadmeKeyDetector": [('k = "[[rdme_{a:70}]]"', "python")],
    "TypeformTokenDetector": [('k = "[[tfp_{U:59}]]"', "python")],
    "FrameioTokenDetector": [('k = "[[fio-u-{U:64}]]"', "python")],
    "NotionTokenDetector": [("NOTION_TOKEN=[[ntn_{D:11}{A:35}]]", "dotenv")],
    "NotionLegacyTokenDetector": [('notion = "[[secret_{A:43}]]"', "python")],
    "LinearKeyDetector": [("LINEAR_API_KEY=[[lin_api_{A:40}]]", "dotenv")],
    "LinearSecretDetector": [('linear_client_secret = "[[{H:32}]]"', "python")],
    "AgeSecretKeyDetector": [("[[AGE-SECRET-KEY-1{b:58}]]", None)],
    "OnePasswordSecretKeyDetector": [("secret key: [[A3-{Z:6}-{Z:11}-{Z:5}-{Z:5}-{Z:5}]]", None)],
    "OnePasswordServiceTokenDetector": [("OP_SERVICE_ACCOUNT_TOKEN=[[ops_eyJ{B:260}]]", "dotenv")],
    "SlackTokenDetector": [
        ("slack_bot: [[xoxb-{D:12}-{D:13}-{A:24}]]", "yaml"),
        ('app = "[[xapp-1-{Z:11}-{D:13}-{H:64}]]"', "python"),
    ],
    "SlackWebhookDetector": [
        ('url = "[[https://hooks.slack.com/services/T{Z:8}/B{Z:10}/{A:24}]]"', "python")
    ],
    "MicrosoftTeamsWebhookDetector": [
        (
            "webhook: [[https://contoso.webhook.office.com/webhookb2/{UUID}@{UUID}/IncomingWebhook/"
            "{a:32}/{UUID}]]",
            "yaml",
        )
    ],
    "DiscordWebhookDetector": [
        ('hook = "[[https://discord.com/api/webhooks/{D:18}/{U:68}]]"', "python")
    ],
    "DiscordBotTokenDetector": [
        ('bot.run("[[{B64:1{D:17}}.{U:6}.{U:27}]]")', "python"),
        ("[[{B64:9{D:17}}.{U:6}.{U:38}]]", None),
    ],
    "NuGetApiKeyDetector": [("nuget push pkg.nupkg -k [[oy2{a:43}]]", "bash")],
    "VaultUnsealKeyDetector": [
        ("Unseal Key 1: [[{B:43}=]]", None),
        ("vault operator unseal [[{B:44}]]", "bash"),
    ],
    "DockerHubTokenDetector": [("DOCKER_PAT=[[dckr_pat_{U:27}]]", "dotenv")],
    "CratesIoTokenDetector": [("cargo login [[cio{A:32}]]", "bash")],
    "DependencyTrackKeyDetector": [('-H "X-Api-Key: [[odt_{A:32}]]"', "bash")],
    "TavilyKeyDetector": [('client = TavilyClient("[[tvly-{A:32}]]")', "python")],
    "PasswordHashDetector": [
        ("admin:[[$6${c:8}${c:86}]]:19000:0:99999:7:::", None),
        ('hash = "[[$2b$12${c:53}]]"', "python"),
        ("root:[[$1${c:8}${c:22}]]:0:0", None),
        ("[[$krb5asrep$23$svc@corp.io:{H:32}${H:96}]]", None),
    ],
    "DiscordSecretDetector": [('discord_client_secret = "[[{U:32}]]"', "python")],
    "TelegramBotTokenDetector": [('bot = Bot("[[{D:10}:AA{U:33}]]")', "python")],
    "AtlassianTokenDetector": [("JIRA_TOKEN=[[ATATT3{U:186}]]", "dotenv")],
    "AtlassianNamedTokenDetector": [("jira_api_token: [[{a:24}]]", "yaml")],
    "AsanaSecretDetector": [('asana_client_secret = "[[{A:32}]]"', "python")],
    "MattermostTokenDetector": [("MATTERMOST_TOKEN=[[{a:26}]]", "dotenv")],
    "GitterTokenDetector": [('gitter_token = "[[{U:40}]]"', "python")],
    "TrelloKeyDetector": [("TRELLO_TOKEN=[[{H:64}]]", "dotenv")],
    "TwitchTokenDetector": [('twitch_oauth = "[[{a:30}]]"', "python")],
    "TwitterSecretDetector": [("TWITTER_API_SECRET=[[{A:50}]]", "dotenv")],
    "FacebookTokenDetector": [('t = "[[EAAC{A:120}]]"', "python")],
    "FacebookSecretDetector": [('facebook_app_secret = "[[{H:32}]]"', "python")],
    "LinkedInSecretDetector": [("LINKEDIN_CLIENT_SECRET=[[{A:16}]]", "dotenv")],
    "IntercomTokenDetector": [('intercom_token = "[[{U:60}]]"', "python")],
    "ZendeskSecretDetector": [("ZENDESK_SECRET=[[{A:40}]]", "dotenv")],
    "SendbirdTokenDetector": [("sendbird_api_token: [[{H:40}]]", "yaml")],
    "MessageBirdKeyDetector": [("MESSAGEBIRD_API_KEY=[[{A:25}]]", "dotenv")],
    "SendinblueKeyDetector": [('k = "[[xkeysib-{H:64}-{A:16}]]"', "python")],
    "SendGridDetector": [('sg = SendGridAPIClient("[[SG.{U:22}.{U:43}]]")', "python")],
    "MailchimpDetector": [('MC = "[[{H:32}-us12]]"', "python")],
    "MailgunKeyDetector": [('mailgun_api_key = "[[key-{H:32}]]"', "python")],
    "TwilioKeyDetector": [('TWILIO = "[[SK{H:32}]]"', "python")],
    "StripeDetector": [
        ('stripe.api_key = "[[sk_live_{A:99}]]"', "python"),
        ("STRIPE=[[rk_test_{A:24}]]", "dotenv"),
    ],
    "SquareTokenDetector": [
        ('SQUARE = "[[sq0atp-{U:22}]]"', "python"),
        ('t = "[[EAAA{U:60}]]"', "python"),
    ],
    "SquareOAuthDetector": [('SQUARE_APP_SECRET = "[[sq0csp-{U:43}]]"', "python")],
    "ShopifyTokenDetector": [('"X-Shopify-Access-Token": "[[shpat_{H:32}]]"', "json")],
    "ShippoTokenDetector": [('k = "[[shippo_live_{H:40}]]"', "python")],
    "EasyPostTokenDetector": [('k = "[[EZAK{A:54}]]"', "python")],
    "DuffelTokenDetector": [('k = "[[duffel_live_{U:43}]]"', "python")],
    "FlutterwaveKeyDetector": [('k = "[[FLWSECK_TEST-{H:32}-X]]"', "python")],
    "FreemiusKeyDetector": [("'secret_key' => '[[sk_{A:29}]]',", "php")],
    "PlaidSecretDetector": [("PLAID_SECRET=[[{a:30}]]", "dotenv")],
    "GoCardlessTokenDetector": [("GOCARDLESS_TOKEN=[[live_{U:40}]]", "dotenv")],
    "CoinbaseTokenDetector": [('coinbase_secret = "[[{U:64}]]"', "python")],
    "KrakenTokenDetector": [("KRAKEN_PRIVATE_KEY=[[{B:86}]]", "dotenv")],
    "KuCoinTokenDetector": [("KUCOIN_SECRET=[[{UUID}]]", "dotenv")],
    "BittrexKeyDetector": [('bittrex_secret = "[[{A:32}]]"', "python")],
    "FinicityTokenDetector": [('finicity_app_key = "[[{H:32}]]"', "python")],
    "FinnhubTokenDetector": [('finnhub_token = "[[{A:20}]]"', "python")],
    "EtsyTokenDetector": [('etsy_api_key = "[[{A:24}]]"', "python")],
    "SquarespaceTokenDetector": [("SQUARESPACE_KEY=[[{UUID}]]", "dotenv")],
    "GrafanaCloudTokenDetector": [("GRAFANA=[[glc_{B:48}==]]", "dotenv")],
    "GrafanaServiceAccountTokenDetector": [('t = "[[glsa_{A:32}_{H:8}]]"', "python")],
    "GrafanaApiKeyDetector": [('t = "[[eyJrIjoi{A:80}]]"', "python")],
    "SentryTokenDetector": [("SENTRY_AUTH_TOKEN=[[sntryu_{H:64}]]", "dotenv")],
    "SentryOrgTokenDetector": [("SENTRY_AUTH_TOKEN=[[sntrys_eyJ{B:120}_{B:43}]]", "dotenv")],
    "SentryNamedTokenDetector": [('sentry_token = "[[{H:64}]]"', "python")],
    "NewRelicKeyDetector": [("NEW_RELIC_API_KEY=[[NRAK-{Z:27}]]", "dotenv")],
    "NewRelicNamedKeyDetector": [('newrelic_user_key = "[[{A:64}]]"', "python")],
    "DynatraceTokenDetector": [('t = "[[dt0c01.{Z:24}.{A:64}]]"', "python")],
    "DatadogKeyDetector": [("DD_API_KEY=[[{H:32}]]", "dotenv")],
    "SumoLogicKeyDetector": [("SUMO_ACCESS_KEY=[[{A:64}]]", "dotenv")],
    "LaunchDarklyTokenDetector": [("LAUNCHDARKLY_ACCESS_TOKEN=[[{U:40}]]", "dotenv")],
    "FastlyTokenDetector": [("FASTLY_API_TOKEN=[[{U:32}]]", "dotenv")],
    "MerakiKeyDetector": [('meraki_api_key = "[[{H:40}]]"', "python")],
    "OktaTokenDetector": [("OKTA_API_TOKEN=[[00{U:40}]]", "dotenv")],
    "OctopusDeployKeyDetector": [('k = "[[API-{Z:26}]]"', "python")],
    "PostmanKeyDetector": [('headers["X-Api-Key"] = "[[PMAK-{H:24}-{H:34}]]"', "python")],
    "RapidApiKeyDetector": [('rapidapi_key = "[[{U:50}]]"', "python")],
    "AlgoliaKeyDetector": [("ALGOLIA_ADMIN_KEY=[[{A:32}]]", "dotenv")],
    "AirtableKeyDetector": [('airtable_api_key = "[[key{A:14}]]"', "python")],
    "AirtableTokenDetector": [('t = "[[pat{A:14}.{H:64}]]"', "python")],
    "AdafruitKeyDetector": [("ADAFRUIT_IO_KEY=[[aio_{A:28}]]", "dotenv")],
    "AdobeClientIdDetector": [('adobe_client_id = "[[{H:32}]]"', "python")],
    "AdobeClientSecretDetector": [('s = "[[p8e-{A:32}]]"', "python")],
    "AuthressKeyDetector": [('k = "[[sc_{a:20}.{a:5}.acc_{a:20}.{B:60}]]"', "python")],
    "BeamerTokenDetector": [('beamer_api_key = "[[b_{U:44}]]"', "python")],
    "ConfluentKeyDetector": [("CONFLUENT_SECRET=[[{A:64}]]", "dotenv")],
    "ContentfulTokenDetector": [("CONTENTFUL_DELIVERY_TOKEN=[[{U:43}]]", "dotenv")],
    "DropboxTokenDetector": [('dropbox_token = "[[sl.{U:135}]]"', "python")],
    "FlickrKeyDetector": [('flickr_api_key = "[[{A:32}]]"', "python")],
    "FreshbooksTokenDetector": [('freshbooks_token = "[[{A:64}]]"', "python")],
    "HubSpotKeyDetector": [("HUBSPOT_API_KEY=[[{UUID}]]", "dotenv")],
    "HubSpotTokenDetector": [('t = "[[pat-na1-{UUID}]]"', "python")],
    "LobKeyDetector": [("LOB_API_KEY=[[live_{H:35}]]", "dotenv")],
    "LookerSecretDetector": [("LOOKER_CLIENT_SECRET=[[{A:24}]]", "dotenv")],
    "MapboxTokenDetector": [('mapboxgl.accessToken = "[[pk.eyJ{U:60}.{U:22}]]";', "javascript")],
    "MaxMindKeyDetector": [("MAXMIND_LICENSE_KEY=[[{A:6}_{A:29}_mmk]]", "dotenv")],
    "NYTimesTokenDetector": [('nytimes_api_key = "[[{U:32}]]"', "python")],
    "SettleMintTokenDetector": [('t = "[[sm_pat_{A:16}]]"', "python")],
    "SidekiqCredentialDetector": [
        ("BUNDLE_GEMS__CONTRIBSYS__COM=[[{H:8}:{H:8}]]", "dotenv"),
        ('source "https://[[{H:8}:{H:8}]]@gems.contribsys.com/"', "ruby"),
    ],
    "YandexKeyDetector": [("YANDEX_API_KEY=[[AQVN{U:36}]]", "dotenv")],
    "CloudantDetector": [('cloudant_password = "[[{H:64}]]"', "python")],
    "IbmCloudIamDetector": [('ibm_cloud_iam_api_key = "[[{U:44}]]"', "python")],
    "IbmCosHmacDetector": [('cos_hmac_secret_access_key = "[[{H:48}]]"', "python")],
    "SoftlayerDetector": [('softlayer_api_key = "[[{a:64}]]"', "python")],
    # detectors with logic of their own
    "JwtDetector": [("Authorization: Bearer [[{JWT}]]", None)],
    "PrivateKeyDetector": [('KEY = """[[{PEM}]]"""', "python")],
    "EmailDetector": [("# Maintainer: [[{l:7}.{l:5}@contoso-mail.io]]", "python")],
    "IPAddressDetector": [
        ("server = [[52.14.200.7]]", "ini"),
        ("addr = [[2a03:2880:f12f:83:face:b00c:0:25de]]", None),
    ],
    "ConnectionStringDetector": [
        ('dsn = "postgresql://app:[[{A:16}]]@db.corp.io:5432/app"', "python"),
        ('"Server=db;User Id=sa;Password=[[{A:14}]];"', None),
    ],
    "CurlCredentialDetector": [
        ("curl -u [[deploy:{A:16}]] https://api.corp.io/v1", "bash"),
        ("curl --user '[[admin:{A:12}!]]' https://x.io", "bash"),
        (
            "curl https://api.corp.io/token \\\n  -X POST \\\n  --user [[{a:15}:{a:15}]] -d x",
            "bash",
        ),
        ('curl -u "[[sk_{A:24}:]]" https://api.corp.io', "bash"),
    ],
    "AuthorizationHeaderDetector": [
        ("curl -H 'Api-Token: [[{A:10}9]]' https://x.io", "bash"),
        ("curl --header 'Authorization: [[{UUID}]]'", "bash"),
        ('curl -H "Authorization: Bearer [[{U:40}]]" https://api.corp.io', "bash"),
        ('headers = {"X-Api-Key": "[[{A:32}]]"}', "python"),
    ],
    "KubernetesSecretDetector": [
        (
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\ndata:\n  password: [[{B:24}]]\n"
            "  user: [[{B:12}]]\n",
            "yaml",
        ),
        ("apiVersion: v1\ndata:\n\textra: [[{B:20}]]\nkind: secret\n", "yaml"),
        ("kind: Secret\ndata:\n  .dockercfg: |\n    [[{B:60}=]]\nmetadata:\n  name: x\n", "yaml"),
    ],
    "KeywordDetector": [
        ('password = "[[Tr0ub4dor&3{D:3}]]"', "python"),
        ('<add key="ClearTextPassword" value="[[Nu{A:10}9]]" />', "xml"),
        ('var dbPassword string = "[[Go{A:10}7]]"', "go"),
        ("<?php $config['db_password'] .= '[[Ph{A:10}1]]';", "php"),
        ('System.setProperty("db.password", "[[Ja{A:10}2]]");', "java"),
        ("DB_PASSWORD ?= [[Mk{A:10}3]]", "makefile"),
        ("API_TOKEN ::= [[Mk{A:10}4]]", "makefile"),
        ("db_password=[[Tx{A:10}5]]", "text"),
        ("SECRET_KEY=[[{A:20}6]]", None),
        ('license_key = "[[{UUID}]]"', "python"),
        ("fetch('https://api.corp.io/v1/img?api_key=[[{A:30}7]]&page=2')", "javascript"),
        ("dotnet nuget push x.nupkg --api-key [[{a:30}4]] -s https://api.corp.io", "bash"),
        ("PsExec.exe \\\\host -u CORP\\admin -p [[Ps{A:10}5]] cmd", None),
        ("creds = [[{A:28}6]]", "text"),
    ],
    "IniContinuationDetector": [("[db]\npassword =\n    [[Ini{A:12}8]]\n", "ini")],
    "XmlElementDetector": [
        ("<password>[[Hunter{D:4}!x]]</password>", "xml"),
        ("<apiToken>\n    [[{a:30}9]]\n</apiToken>", "xml"),
    ],
    "NetrcDetector": [
        ("machine api.corp.io login deploy password [[{A:20}]]", None),
        ("machine git.corp.io\n  login ci\n  password [[{A:16}3]]\n", None),
    ],
    "Base64HighEntropyString": [('blob = "[[{B:40}]]"', "python")],
    "HexHighEntropyString": [("seed = '[[{H:40}]]'", "python")],
    "EncodedSecretDetector": [
        ('cfg = "[[{B64:ghp_{A:36}}]]"', "python"),
        ("payload: [[{HEXOF:token=glpat-{U:20}}]]", "yaml"),
        ('q = "[[{PCT:"key": "sk_live_{A:30}"}]]"', "python"),
        ('v = "[[{B64:{B64:hvs.{U:95}}}]]"', "python"),
    ],
}

# detector -> [(text, language)]: none of these may give this detector a span.
NEGATIVES: dict[str, list[tuple[str, str | None]]] = {
    "JwtDetector": [("eyJhbGciOi.eyJzdWIiOi.abc", None), ("eyJ{A:12}.eyJ{A:12}.{A:10}", None)],
    "PrivateKeyDetector": [("-----BEGIN RSA PRIVATE KEY----- is the header", None)],
    "EmailDetector": [('icon = "logo@2x.png"', "python")],
    "IPAddressDetector": [("version 1.2.3", None), ("x = a[1::2]", "python"), ("256.1.1.1", None)],
    "ConnectionStringDetector": [("see https://docs.corp.io/page", None)],
    "CurlCredentialDetector": [
        ("curl -u $USER: https://x.io", "bash"),
        ("curl https://x.io", "bash"),
        ("curl -u 'test:test' https://x.io", "bash"),
        ('curl --user "$1:$2" https://x.io', "bash"),
        ("curl --user neo4j:[PASSWORD] http://x.io", "bash"),
        ('curl --user "username:password" https://x.io', "bash"),
    ],
    "DiscordBotTokenDetector": [("v = '{A:24}.{U:6}.{U:27}'", "python")],
    "PasswordHashDetector": [("price: $5$ per month, $6$ per year", None)],
    "XmlElementDetector": [
        ("<password>\n    secret\n</password>", "xml"),
        ("<UserSecretsId>{UUID}</UserSecretsId>", "xml"),
    ],
    "NetrcDetector": [("the machine learning password reset flow", None)],
    "AuthorizationHeaderDetector": [("Authorization: Bearer", None), ("X-Api-Key: short", None)],
    "KubernetesSecretDetector": [
        ("kind: ConfigMap\ndata:\n  mode: {B:24}\n", "yaml"),
        ("kind: Secret\ndata:\n  extra: YmFyCg==\n", "yaml"),
    ],
    "KeywordDetector": [
        ("fetch('https://api.corp.io/v1/img?api_key=short&page=2')", "javascript"),
        ("tool --token $TOKEN --password=hunter", "bash"),
        ('<entry key="app.feature.v8_flag" value="on" />', "xml"),
        ("password = get_password()", "python"),
        ('secret = vault.get_secret("db-password")', "python"),
        ("the password is in the vault", "text"),
        ("monkey = banana", "text"),
        ("token_count = 42", None),
    ],
    "IniContinuationDetector": [("[db]\nuser =\n    admin\n", "ini")],
    "Base64HighEntropyString": [
        ("x = 'aaaaaaaaaaaaaaaaaaaaaaaa'", "python"),
        ("name = {B:30}", "python"),
    ],
    "HexHighEntropyString": [("x = '1111111111111111111111'", "python")],
    "EncodedSecretDetector": [('x = "{B64:just some ordinary words here}"', "python")],
}


def fill(template: str, rng: random.Random) -> str:
    """A template with every `{K:n}` drawn at random (markers kept)."""
    template = _expand_special(template, rng)
    return _FIELD.sub(lambda m: _field(m.group(1), m.group(2), rng), template)


def _field(kind: str, count: str, rng: random.Random) -> str:
    if kind == "UUID":
        parts = ["".join(rng.choice(FILL["H"]) for _ in range(k)) for k in (8, 4, 4, 4, 12)]
        return "-".join(parts)
    return "".join(rng.choice(FILL[kind]) for _ in range(int(count)))


def _expand_special(template: str, rng: random.Random) -> str:
    """{JWT}, {PEM} and the encoders {B64:…}, {HEXOF:…}, {PCT:…} (innermost first)."""
    import base64
    from urllib.parse import quote

    template = template.replace("{JWT}", _jwt(rng)).replace("{PEM}", _pem(rng))
    encoders: dict[str, Callable[[str], str]] = {
        "B64": lambda s: base64.b64encode(s.encode()).decode(),
        "HEXOF": lambda s: s.encode().hex(),
        "PCT": lambda s: quote(s, safe=""),
    }
    pattern = re.compile(r"\{(B64|HEXOF|PCT):((?:[^{}]|\{[A-Za-z]:\d+\}|\{UUID\})*)\}")
    while (match := pattern.search(template)) is not None:
        inner = _FIELD.sub(lambda m: _field(m.group(1), m.group(2), rng), match.group(2))
        template = (
            template[: match.start()] + encoders[match.group(1)](inner) + template[match.end() :]
        )
    return template


def _jwt(rng: random.Random) -> str:
    import base64
    import json

    def part(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    claims = {"sub": str(rng.randrange(10**9)), "iat": 1700000000}
    signature = "".join(rng.choice(FILL["U"]) for _ in range(43))
    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.{signature}"


def _pem(rng: random.Random) -> str:
    body = "\n".join("".join(rng.choice(FILL["B"]) for _ in range(64)) for _ in range(6))
    return f"-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----"


def render(template: str, rng: random.Random) -> tuple[str, list[tuple[int, int]]]:
    """(text, the marked spans) of a filled template."""
    filled = fill(template, rng)
    spans: list[tuple[int, int]] = []
    text = ""
    for piece in re.split(r"(\[\[|\]\])", filled):
        if piece == "[[":
            start = len(text)
        elif piece == "]]":
            spans.append((start, len(text)))
        else:
            text += piece
    return text, spans
