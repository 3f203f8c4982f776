"""Typed node configuration: one TOML file per data directory, validated in one place.

Every key an operator can set, its type, default and check, is read in this package: the node's sections, the
whole ``NodeConfig`` and its loading in core, the ``[notifications]`` section in notifications, the host file of
``supnet serve --host-config`` in host. Secrets (SMTP password, robot secrets) are never keys: the config names the
file or environment variable. Import from ``node.config``, not from its modules.
"""

from node.config.base import check_address
from node.config.core import (
    CONFIG_FILE_NAME,
    LEVELS,
    NODE_ID_PATTERN,
    CalendarConfig,
    ChildConfig,
    DirectivesConfig,
    FederationConfig,
    IngestConfig,
    Level,
    LoggingConfig,
    MetricsConfig,
    NodeConfig,
    RuleThreshold,
    ScoresConfig,
    ScoreWeights,
    SpotCheckConfig,
    StoreConfig,
    SupervisionConfig,
    WebConfig,
    config_path,
    csv_delimiter,
    database_url,
    delimiter_label,
    is_loopback_address,
    load_config,
    parse_config,
    save_config,
)
from node.config.host import HostConfig, load_host_config
from node.config.notifications import ChannelName, NotificationsConfig, Operator, Recipient, Robot, RobotKind

__all__ = [
    "CONFIG_FILE_NAME",
    "LEVELS",
    "NODE_ID_PATTERN",
    "CalendarConfig",
    "ChannelName",
    "ChildConfig",
    "DirectivesConfig",
    "FederationConfig",
    "HostConfig",
    "IngestConfig",
    "Level",
    "LoggingConfig",
    "MetricsConfig",
    "NodeConfig",
    "NotificationsConfig",
    "Operator",
    "Recipient",
    "Robot",
    "RobotKind",
    "RuleThreshold",
    "ScoreWeights",
    "ScoresConfig",
    "SpotCheckConfig",
    "StoreConfig",
    "SupervisionConfig",
    "WebConfig",
    "check_address",
    "config_path",
    "csv_delimiter",
    "database_url",
    "delimiter_label",
    "is_loopback_address",
    "load_config",
    "load_host_config",
    "parse_config",
    "save_config",
]
