"""The node's configuration (``supnet.toml``): every section but notifications, the whole ``NodeConfig``, loading.

Cross-section checks (the parent id against the node id) live on ``NodeConfig`` here, and every error names the
bad key (``parse_config``, ``load_config``). The ``[notifications]`` section is node.config.notifications.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import tomli_w
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from node.config.base import OptionalListenAddress, Section, check_address, describe_errors
from node.config.notifications import NotificationsConfig
from node.errors import ConfigError

CONFIG_FILE_NAME = "supnet.toml"
# Segments double as DNS labels in node certificates (node.trust.node_ids), hence no "_" and no trailing "-".
NODE_ID_PATTERN = re.compile(r"^[a-z](?:[a-z0-9-]{0,30}[a-z0-9])?(?:\.[a-z](?:[a-z0-9-]{0,30}[a-z0-9])?)*$")
Level = Literal["province", "city", "district", "street"]
LEVELS: tuple[Level, ...] = ("province", "city", "district", "street")


class StoreConfig(Section):
    """Where the node keeps its data."""

    url: str = Field(default="", description="SQLAlchemy URL; empty means SQLite file node.db in the data dir")
    batch_size: int = Field(default=10_000, ge=100, le=1_000_000)
    auto_migrate: bool = Field(
        default=True,
        description="writing commands (serve, import, scan …) bring an old schema up to date when they open the "
        "node; false: they refuse like read-only commands, and 'supnet db upgrade' (reviewed with --sql) does it",
    )


# Names a CSV delimiter may be given by (on the command line a tab is awkward to type).
_DELIMITER_NAMES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
_DELIMITER_LABELS = {
    "\t": ("制表符", "tab"),
    ",": ("逗号", "comma"),
    ";": ("分号", "semicolon"),
    "|": ("竖线", "pipe"),
}


def csv_delimiter(value: str) -> str:
    """The one-character CSV delimiter ``value`` names (``,`` ``;`` ``|``, a tab also as ``tab``); else ValueError."""
    delimiter = _DELIMITER_NAMES.get(value.lower(), value)
    if len(delimiter) != 1 or delimiter in {'"', "\r", "\n", " "} or delimiter.isalnum():
        raise ValueError(
            f"{value!r} is not a CSV delimiter: one character such as ',' ';' '|' or tab (write 'tab' or '\\t')"
        )
    return delimiter


def delimiter_label(delimiter: str, *, english: bool = False) -> str:
    """How a delimiter is named to people: 制表符 / tab, 分号 / semicolon, else the character in quotes."""
    labels = _DELIMITER_LABELS.get(delimiter)
    if labels is None:
        return f"'{delimiter}'"
    return labels[1] if english else labels[0]


class IngestConfig(Section):
    """Import checks (docs/domain.md §11) and how CSV files are read."""

    csv_delimiter: str = Field(
        default=",", description="the CSV field delimiter when `supnet import` is not given --delimiter: , ; | or tab"
    )

    @field_validator("csv_delimiter")
    @classmethod
    def _check_delimiter(cls, value: str) -> str:
        return csv_delimiter(value)

    clock_skew_seconds: int = Field(
        default=600,
        ge=0,
        le=86_400,
        description="how far an acceptance or completion may lie ahead of the node's clock (the sender's clock may "
        "run fast) before it is rejected as in the future",
    )


class CalendarConfig(Section):
    """Working-day calendar and time zone."""

    timezone: str = Field(default="Asia/Shanghai", description="IANA time zone name of the node's local times")
    holidays_file: str = Field(default="", description="operator holiday TOML, relative to the data dir")

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        # Checked here, not at first use: every command reads local times, and a typo must not become a traceback.
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name, e.g. Asia/Shanghai)") from None
        return value


class RuleThreshold(Section):
    """Per-rule overrides; every field is optional so per-item-type overrides stay small."""

    enabled: bool | None = None
    reminder_workdays: int | None = Field(default=None, ge=0, le=30)
    supervision_workdays: int | None = Field(default=None, ge=1, le=60)
    late_entry_hours: int | None = Field(default=None, ge=1, le=24 * 30)
    max_supplements: int | None = Field(default=None, ge=1, le=10)


class SupervisionConfig(Section):
    """Rule thresholds: defaults, then overrides per rule id and per item type code."""

    reminder_workdays: int = Field(default=1, ge=0, le=30)
    yellow_supervision_workdays: int = Field(default=3, ge=1, le=60)
    late_entry_hours: int = Field(default=72, ge=1, le=24 * 30)
    max_supplements: int = Field(default=1, ge=1, le=10)
    complaint_decision_workdays: int = Field(default=5, ge=1, le=60)
    complaint_handling_workdays: int = Field(default=15, ge=1, le=120)
    scan_interval_seconds: int = Field(default=300, ge=1)
    # R12 (退件率较高): a department's 退件率 over the last ``return_rate_window_days`` days above the threshold, once
    # it received at least ``return_rate_min_received`` cases in that window (tiny departments are not flagged).
    return_rate_threshold: float = Field(default=0.10, gt=0, le=1)
    return_rate_min_received: int = Field(default=20, ge=1)
    return_rate_window_days: int = Field(default=30, ge=1, le=366)
    # R13: the follow-up of a rating 4–5 is due this many working days after the evaluation (node calendar).
    evaluation_followup_workdays: int = Field(default=5, ge=1, le=60)
    rules: dict[str, RuleThreshold] = Field(default_factory=dict)
    item_types: dict[str, dict[str, RuleThreshold]] = Field(default_factory=dict)


class ScoreWeights(Section):
    """Weights of the score's parts (效能考评 as in the Panyu report); the parts with data share them pro rata."""

    supervision: float = Field(default=0.6, ge=0, description="电子监察: cards, late completion, returns, early")
    satisfaction: float = Field(default=0.25, ge=0, description="群众满意度: 好差评 ratings 1–3 ÷ all ratings")
    complaints: float = Field(default=0.15, ge=0, description="效能投诉: substantiated complaints, closure")
    assessment: float = Field(
        default=0.0,
        ge=0,
        le=0,
        description="评议/自评 panel and self assessments: supnet records none yet, so this weight must stay 0",
    )

    @model_validator(mode="after")
    def _some_weight(self) -> ScoreWeights:
        if self.supervision + self.satisfaction + self.complaints <= 0:
            raise ValueError("at least one of supervision, satisfaction, complaints needs a weight above 0")
        return self


# Keys of the per-card scheme that rate-based scores replaced (issue 12), with the defaults old configs were saved
# with: dropped when unchanged, refused when customised (their meaning is gone, so a silent drop would mislead).
_LEGACY_SCORE_KEYS: dict[str, Any] = {
    "base": 100.0,
    "yellow_card": -5.0,
    "red_card": -10.0,
    "complaint_substantiated": -3.0,
    "dissatisfied_rating": -1.0,
    "rule_areas": {
        "R01": "time",
        "R02": "time",
        "R03": "time",
        "R04": "time",
        "R05": "time",
        "R06": "fees",
        "R07": "process",
        "R08": "process",
        "R09": "process",
        "R10": "complaints",
        "R11": "complaints",
    },
}
_LEGACY_AREA_WEIGHTS = {"process": 1.0, "time": 1.0, "fees": 1.0, "satisfaction": 1.0, "complaints": 1.0}


class ScoresConfig(Section):
    """Efficiency score scheme (docs/domain.md §7): rate-based parts, each 0–100, and their weights.

    Deductions count per 100 cases handled or scale with a rate, so volume alone never lowers a score.
    """

    yellow_card_per_100_cases: float = Field(
        default=1.0, ge=0, description="supervision points off per yellow card per 100 cases handled"
    )
    red_card_per_100_cases: float = Field(
        default=2.0, ge=0, description="supervision points off per red card per 100 cases handled"
    )
    late_completion_points: float = Field(
        default=20.0, ge=0, description="supervision points off at a 100% overdue_rate (completed after the promise)"
    )
    return_rate_points: float = Field(default=20.0, ge=0, description="supervision points off at a 100% return_rate")
    early_completion_threshold: float = Field(default=0.10, ge=0, le=1)
    early_completion_bonus_per_10pct: float = Field(
        default=1.0, ge=0, description="supervision points per 10 points of early_rate above the threshold"
    )
    complaint_substantiated_per_100_cases: float = Field(
        default=10.0, ge=0, description="complaints points off per substantiated complaint per 100 cases handled"
    )
    unclosed_complaint_points: float = Field(
        default=20.0, ge=0, description="complaints points off at a 0% complaint_closure_rate"
    )
    weights: ScoreWeights = Field(default_factory=ScoreWeights)

    @model_validator(mode="before")
    @classmethod
    def _drop_legacy_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for key, default in _LEGACY_SCORE_KEYS.items():
            if key in data:
                if data[key] != default:
                    raise ValueError(
                        f"'{key}' belongs to the per-card score scheme, replaced by rate-based scores "
                        "(docs/domain.md §7): remove it and set the per-100-cases keys instead"
                    )
                del data[key]
        weights = data.get("weights")
        if isinstance(weights, dict) and set(weights) & {"process", "time", "fees"}:
            if weights != _LEGACY_AREA_WEIGHTS:
                raise ValueError(
                    "weights per area (process, time, fees, …) belong to the per-card score scheme: "
                    "use weights for supervision, satisfaction, complaints (docs/domain.md §7)"
                )
            del data["weights"]
        return data


class DirectivesConfig(Section):
    """Directives downward (督办, 效能告诫书, 整改通知, 通报): response time, escalation, pace (docs/domain.md §8)."""

    default_respond_within_workdays: int = Field(
        default=5,
        ge=0,
        le=120,
        description="working days to respond when 'supnet directive issue' names none (bulletins: none due); "
        "counted by the target's calendar from the day of delivery",
    )
    escalate_after_workdays: int = Field(
        default=3,
        ge=1,
        le=60,
        description="working days after the response was due before a late one is escalated to this node's operators "
        "(as target) and the issuer's parent (set by the target, which signs both times on delivery)",
    )
    check_interval_seconds: float = Field(
        default=60.0, gt=0, description="how often `supnet serve` looks for responses that fell due or are to escalate"
    )
    poll_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="how often `supnet serve` looks at the directive outbox for messages queued by other processes "
        "when it cannot watch the database files (PostgreSQL); on SQLite a write wakes it "
        "(retries follow federation.retry_base_seconds / retry_max_seconds)",
    )


class SpotCheckConfig(Section):
    """Spot checks (抽查, node.spotcheck): commitments in this node's reports; checks of its descendants."""

    commitments: bool = Field(
        default=True, description="commit to the records behind each reported bucket (needed to be spot-checked)"
    )
    interval_seconds: float = Field(
        default=0.0, ge=0, description="how often `supnet serve` spot-checks descendants (0: never, only by command)"
    )
    targets_per_run: int = Field(default=1, ge=1, le=100, description="descendants checked at each scheduled run")
    samples: int = Field(default=30, ge=1, le=200, description="leaves opened per check")
    pairs: int = Field(
        default=0,
        ge=0,
        le=50,
        description="adjacent leaf pairs opened per check for the case-number gap test (only where numbers are "
        "issued in sequence per item and day)",
    )
    days: int = Field(default=30, ge=1, le=366, description="scheduled checks draw buckets of the last N days")


class ChildConfig(Section):
    """A registered child node."""

    id: str
    public_key: str = Field(
        default="",
        description="base64 raw Ed25519 report key of the child: insecure plaintext mode only (else: certificates)",
    )
    address: str = Field(default="", description="host:port of the child's server, for drill-down forwarding")

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: str) -> str:
        return check_address(value) if value else value  # empty: not served, queries below it are refused


class FederationConfig(Section):
    """Where the node listens, its parent, its children and its report schedule."""

    listen: str = Field(default="127.0.0.1:0", description="host:port the node serves on (port 0: any free port)")
    parent_id: str = ""
    # Validated even when absent: parent_id without it would serve with no report job and no warning.
    parent_address: str = Field(default="", validate_default=True, description="host:port of the parent's server")
    parent_public_key: str = Field(default="", description="insecure plaintext mode only (else: certificates)")
    children: list[ChildConfig] = Field(default_factory=list)
    report_interval_seconds: float = Field(default=300.0, gt=0)
    report_on_change: bool = False
    report_debounce_seconds: float = Field(default=1.0, ge=0)
    full_report_interval_seconds: float = Field(default=3600.0, gt=0)
    full_report_window_days: int = Field(default=90, ge=1)
    stale_after_intervals: int = Field(default=3, ge=1)
    outbox_max_reports: int = Field(default=1000, ge=1)
    retry_base_seconds: float = Field(default=1.0, gt=0, description="first retry delay of an unacknowledged report")
    retry_max_seconds: float = Field(default=300.0, gt=0, description="cap of the exponential retry delay")
    rpc_timeout_seconds: float = Field(default=5.0, gt=0)
    enrol_listen: str = Field(
        default="127.0.0.1:0",
        description="host:port of the plaintext enrolment listener (EnrolmentService only), run with pki/ca.key",
    )
    renew_before_days: int = Field(
        default=30, ge=1, description="days ahead of expiry the renewal job warns and re-issues own leaf certificates"
    )
    insecure_plaintext: bool = Field(
        default=False,
        description="serve and call other nodes WITHOUT TLS, for local experiments only; nodes with pki/ use mTLS",
    )

    @field_validator("listen", "enrol_listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        return check_address(value, listening=True)

    @field_validator("parent_id")
    @classmethod
    def _check_parent_id(cls, value: str) -> str:
        if value and not NODE_ID_PATTERN.match(value):
            raise ValueError(f"{value!r} is not a node id (dotted lowercase segments, e.g. gd.gz)")
        return value

    @field_validator("parent_address")
    @classmethod
    def _check_parent_address(cls, value: str, info: ValidationInfo) -> str:
        parent_id = info.data.get("parent_id")
        if parent_id is None:
            return value  # parent_id itself is invalid and reported
        if parent_id and not value:
            raise ValueError(
                f"federation.parent_id is {parent_id!r} but federation.parent_address is empty: the node would never "
                "report; set the parent's host:port, or clear both (a root node)"
            )
        if value and not parent_id:
            raise ValueError(
                f"federation.parent_address is {value!r} but federation.parent_id is empty: set the parent's id "
                "(its TLS certificate must name it), or clear both (a root node)"
            )
        return check_address(value) if value else value


class MetricsConfig(Section):
    """The Prometheus endpoint of ``supnet serve`` (plain HTTP, no personal data: counts, ages, states)."""

    listen: OptionalListenAddress = Field(
        default="127.0.0.1:0",
        description="host:port of http://HOST:PORT/metrics (port 0: any free port, written to serve.json as "
        "metrics_address); loopback unless a scraper on another machine needs it; empty: no endpoint",
    )


class LoggingConfig(Section):
    """Log lines on stderr: the node's clock (ISO 8601 with UTC offset) and its id on every one."""

    format: Literal["text", "json"] = Field(
        default="text", description="text, or json (one object per line); --log-format overrides it"
    )
    level: Literal["", "DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="",
        description="empty: SUPNET_LOG_LEVEL, else INFO for supnet serve and WARNING for other commands "
        "(SUPNET_LOG_LEVEL overrides it)",
    )


def is_loopback_address(address: str) -> bool:
    """True when ``host:port`` names this machine only (127.0.0.0/8, ::1 or localhost)."""
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


class WebConfig(Section):
    """The supervisor console that ``supnet serve`` also serves (node.web): address, HTTPS, sessions, thresholds."""

    enabled: bool = Field(default=True, description="serve the web console next to the gRPC server")
    listen: str = Field(
        default="127.0.0.1:0",
        description="host:port of the console (port 0: any free port, the bound one is in serve.json); on an "
        "address other than loopback only with https",
    )
    # Validated even at its default: a non-loopback listen address without it must be refused.
    https: bool = Field(
        default=False,
        validate_default=True,
        description="serve HTTPS with a certificate from the node's CA (required on a non-loopback address)",
    )
    certificate: str = Field(
        default="",
        description="PEM chain for HTTPS, relative to the data dir; empty: pki/web.pem, issued by the node's own CA",
    )
    private_key: str = Field(
        default="", validate_default=True, description="PEM key of web.certificate (empty: pki/web.key)"
    )
    behind_https_proxy: bool = Field(
        default=False, description="a reverse proxy terminates HTTPS in front of a loopback console: Secure cookies"
    )
    session_idle_minutes: int = Field(default=30, ge=1, le=24 * 60, description="log out after this much idle time")
    max_failed_logins: int = Field(default=5, ge=1, le=100, description="failed passwords in a row before a lockout")
    lockout_minutes: int = Field(default=15, ge=1, le=24 * 60)
    language: Literal["zh", "en"] = Field(default="zh", description="language of a visitor who has not chosen one")
    # Traffic lights: a rate under its target is red, within 5 points above it yellow (退件率: the R12 threshold).
    on_time_rate_target: float = Field(default=0.9, ge=0, le=1)
    satisfaction_rate_target: float = Field(default=0.9, ge=0, le=1)
    complaint_closure_rate_target: float = Field(default=0.9, ge=0, le=1)

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        return check_address(value, listening=True)

    @field_validator("https")
    @classmethod
    def _https_off_loopback(cls, value: bool, info: ValidationInfo) -> bool:
        listen = info.data.get("listen")
        if listen is not None and not value and not is_loopback_address(listen):
            raise ValueError(
                f"web.listen is {listen!r}, not a loopback address: the console serves other machines only over "
                "HTTPS; set web.https = true (certificate from the node's CA), or listen on 127.0.0.1 behind the "
                "office's reverse proxy"
            )
        return value

    @field_validator("private_key")
    @classmethod
    def _both_or_neither(cls, value: str, info: ValidationInfo) -> str:
        certificate = info.data.get("certificate")
        if certificate is not None and bool(certificate) != bool(value):
            raise ValueError("set web.certificate and web.private_key together, or neither (pki/web.* from the CA)")
        return value


class NodeConfig(Section):
    """The whole node configuration (``supnet.toml`` in the data directory)."""

    id: str
    level: Level = "district"
    name: str = ""
    store: StoreConfig = Field(default_factory=StoreConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    calendar: CalendarConfig = Field(default_factory=CalendarConfig)
    supervision: SupervisionConfig = Field(default_factory=SupervisionConfig)
    notifications: NotificationsConfig = Field(default_factory=NotificationsConfig)
    scores: ScoresConfig = Field(default_factory=ScoresConfig)
    federation: FederationConfig = Field(default_factory=FederationConfig)
    directives: DirectivesConfig = Field(default_factory=DirectivesConfig)
    spotcheck: SpotCheckConfig = Field(default_factory=SpotCheckConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    web: WebConfig = Field(default_factory=WebConfig)

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not NODE_ID_PATTERN.match(value):
            raise ValueError("node id must be dotted lowercase segments, e.g. gd.gz.py")
        return value

    @field_validator("federation")
    @classmethod
    def _parent_is_the_id_prefix(cls, value: FederationConfig, info: ValidationInfo) -> FederationConfig:
        # The tree is spelled in the ids: enrolment and authorization take a node's parent from its id.
        node_id = info.data.get("id")
        named = value.parent_id
        if node_id is not None and named and named != node_id.rpartition(".")[0]:
            parent = node_id.rpartition(".")[0]
            raise ValueError(
                f"federation.parent_id is {named!r}, but node {node_id}'s parent is "
                f"{repr(parent) if parent else '(none: it is a root)'}"
            )
        return value

    @property
    def parent_id(self) -> str:
        """The parent's id: this id minus its last segment ('' at the root)."""
        return self.id.rpartition(".")[0]


def parse_config(data: dict[str, Any], source: str = "config") -> NodeConfig:
    """Validate a config mapping; raise ConfigError naming each bad key."""
    try:
        return NodeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc, source)) from exc


def config_path(data_dir: Path) -> Path:
    """Path of the config file inside a data directory."""
    return data_dir / CONFIG_FILE_NAME


def load_config(data_dir: Path) -> NodeConfig:
    """Read and validate ``supnet.toml`` from a data directory."""
    path = config_path(data_dir)
    if not path.exists():
        raise ConfigError(f"{path}: no node config here; run 'supnet init --data-dir {data_dir} --id NODE_ID' first")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_config(data, str(path))


def save_config(data_dir: Path, config: NodeConfig) -> Path:
    """Write the config as TOML (defaults included, so operators see every knob)."""
    path = config_path(data_dir)
    path.write_text(tomli_w.dumps(config.model_dump(mode="json", exclude_none=True)), encoding="utf-8")
    return path


def database_url(data_dir: Path, config: NodeConfig) -> str:
    """The node's database URL: the configured one, else the SQLite file in the data dir."""
    if config.store.url:
        return config.store.url
    return f"sqlite:///{(data_dir / 'node.db').resolve()}"
