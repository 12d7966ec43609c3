"""The worker's view of the channels table, reloaded when the configuration changes."""

from __future__ import annotations

import logging

from sqlalchemy import select

from switchboard_shared.channel_keys import split_keys
from switchboard_shared.channel_types import served_models
from switchboard_shared.db import Channel, Database
from switchboard_shared.last_good_copy import LastGoodCopy
from switchboard_shared.model_index import ModelIndex
from switchboard_shared.secret_box import SecretBox, SecretDecryptError

from .channels.base import ChannelConfig

log = logging.getLogger(__name__)

ChannelsByModel = ModelIndex[ChannelConfig]


class ChannelDirectory:
    """Enabled channels by model name.

    Jobs carry the configuration version the edge saw; a newer one than ours
    means an admin changed channels, so we reload before choosing. While the
    database is away the last good copy serves (`LastGoodCopy`). Keys are
    decrypted here, once per load; a channel whose key this process cannot
    decrypt (another SB_SECRET_KEY) is left out, and logged, so the others serve.
    """

    def __init__(self, db: Database, secrets: SecretBox) -> None:
        self._db = db
        self._secrets = secrets
        self._copy: LastGoodCopy[ChannelsByModel] = LastGoodCopy("channels", self._read)

    async def channels_for(self, model: str, group: str, min_version: int) -> list[ChannelConfig]:
        """Enabled channels serving `model` to keys of `group`, fresh as of `min_version`."""
        return (await self._copy.get(min_version)).lookup(model, group)

    async def _read(self) -> ChannelsByModel:
        async with self._db.session() as session:
            rows = (await session.scalars(select(Channel).where(Channel.enabled.is_(True)))).all()
        by_model: ChannelsByModel = ModelIndex()
        for row in rows:
            config = config_of(row, self._secrets)
            if config is not None:
                by_model.add(served_models(config.models, config.info), config.group, config)
        return by_model


def config_of(row: Channel, secrets: SecretBox) -> ChannelConfig | None:
    """A channel row as adaptors see it, its key decrypted; None (logged) when this SB_SECRET_KEY cannot."""
    try:
        keys = split_keys(secrets.decrypt(row.api_key))
    except SecretDecryptError:
        log.error("channel skipped: its api_key cannot be decrypted with this SB_SECRET_KEY", extra={"channel_id": row.id})
        return None
    return ChannelConfig(
        id=row.id,
        name=row.name,
        type=row.type,
        base_url=row.base_url,
        api_key=keys[0] if keys else "",
        api_keys=tuple(keys),
        models=tuple(row.models or ()),
        options=dict(row.options or {}),
        info=dict(row.info or {}),
        priority=row.priority,
        weight=row.weight,
        model_mapping=dict(row.model_mapping or {}),
        group=row.group_name,
    )
