"""A One API database on SQLite, with the tables as One API's GORM models create them.

Schema from songquanpeng/one-api `model/token.go`, `model/channel.go`, `model/user.go` and
`model/option.go` (GORM's SQLite DDL for those structs), so an import test reads what a real
One API installation leaves behind.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE `users` (`id` integer PRIMARY KEY AUTOINCREMENT,`username` text,`password` text NOT NULL,`display_name` text,
  `role` integer DEFAULT 1,`status` integer DEFAULT 1,`email` text,`github_id` text,`wechat_id` text,`lark_id` text,`oidc_id` text,
  `access_token` char(32),`quota` bigint DEFAULT 0,`used_quota` bigint DEFAULT 0,`request_count` integer DEFAULT 0,
  `group` varchar(32) DEFAULT 'default',`aff_code` varchar(32),`inviter_id` integer);
CREATE UNIQUE INDEX `idx_users_username` ON `users`(`username`);
CREATE TABLE `tokens` (`id` integer PRIMARY KEY AUTOINCREMENT,`user_id` integer,`key` char(48),`status` integer DEFAULT 1,
  `name` text,`created_time` bigint,`accessed_time` bigint,`expired_time` bigint DEFAULT -1,`remain_quota` bigint DEFAULT 0,
  `unlimited_quota` numeric DEFAULT false,`used_quota` bigint DEFAULT 0,`models` text,`subnet` text DEFAULT '');
CREATE UNIQUE INDEX `idx_tokens_key` ON `tokens`(`key`);
CREATE INDEX `idx_tokens_name` ON `tokens`(`name`);
CREATE TABLE `channels` (`id` integer PRIMARY KEY AUTOINCREMENT,`type` integer DEFAULT 0,`key` text,`status` integer DEFAULT 1,
  `name` text,`weight` integer DEFAULT 0,`created_time` bigint,`test_time` bigint,`response_time` integer,`base_url` text DEFAULT '',
  `other` text,`balance` real,`balance_updated_time` bigint,`models` text,`group` varchar(32) DEFAULT 'default',
  `used_quota` bigint DEFAULT 0,`model_mapping` varchar(1024) DEFAULT '',`priority` bigint DEFAULT 0,`config` text,
  `system_prompt` text);
CREATE INDEX `idx_channels_name` ON `channels`(`name`);
CREATE TABLE `options` (`key` text,`value` text,PRIMARY KEY (`key`));
"""


@dataclass
class OneApiDatabase:
    """A One API SQLite database file being filled by a test."""

    path: Path
    _conn: sqlite3.Connection = field(init=False)

    def __post_init__(self) -> None:
        self._conn = sqlite3.connect(self.path)
        self._conn.executescript(SCHEMA)
        self.user_id = self._insert("users", username="root", password="x", role=100, quota=500_000_000)

    def _insert(self, table: str, **values: Any) -> int:
        columns = ", ".join(f"`{c}`" for c in values)
        marks = ", ".join("?" for _ in values)
        cursor = self._conn.execute(f"INSERT INTO `{table}` ({columns}) VALUES ({marks})", tuple(values.values()))
        self._conn.commit()
        return int(cursor.lastrowid or 0)

    def add_channel(self, **values: Any) -> int:
        """A `channels` row (One API's defaults for what is not given)."""
        return self._insert("channels", **{"created_time": 1_700_000_000, "group": "default", **values})

    def add_token(self, **values: Any) -> int:
        """A `tokens` row of the root user (One API's defaults for what is not given)."""
        return self._insert("tokens", **{"user_id": self.user_id, "created_time": 1_700_000_000, "accessed_time": 1_700_000_000,
                                         **values})

    def set_option(self, key: str, value: str) -> None:
        """An `options` row (One API's settings, e.g. QuotaPerUnit)."""
        self._insert("options", key=key, value=value)

    def close(self) -> None:
        self._conn.close()
