"""Admin API: /api/prices. What each model costs; `*` (set with PUT /api/prices/default) prices all others."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import select

from switchboard_shared.db import DEFAULT_PRICE_MODEL, Price
from switchboard_shared.errors import OpenAIError

from ..openapi_bodies import json_body
from ..schemas.admin import PriceBody, PriceOut, PriceSet
from ..state import EdgeState
from .deps import edge_of, json_object, require_admin
from .validation import parse

router = APIRouter(prefix="/api/prices", dependencies=[Depends(require_admin)])

_DEFAULT_NAMES = ("default", DEFAULT_PRICE_MODEL)


def price_out(price: Price) -> PriceOut:
    return PriceOut(model=price.model, input_per_million=price.input_per_million, output_per_million=price.output_per_million,
                    per_call=price.per_call, updated_at=price.updated_at)


async def _upsert(edge: EdgeState, model: str, body: PriceBody, response: Response) -> PriceOut:
    """Create or replace the price of `model`; every edge and worker picks it up at once (config version)."""
    async with edge.db.session() as session, session.begin():
        price = await session.scalar(select(Price).where(Price.model == model))
        if price is None:
            price = Price(model=model)
            session.add(price)
            response.status_code = 201
        price.input_per_million, price.output_per_million, price.per_call = (
            body.input_per_million, body.output_per_million, body.per_call)
    await edge.catalog.changed()
    return price_out(price)


@router.post("", openapi_extra=json_body(PriceSet))
async def set_price(request: Request, response: Response) -> PriceOut:
    """Upsert by model (a name or a `prefix*` pattern): 201 when new, 200 when replaced."""
    data = parse(PriceSet, await json_object(request))
    return await _upsert(edge_of(request), data.model, data, response)


@router.put("/default", openapi_extra=json_body(PriceBody))
async def set_default_price(request: Request, response: Response) -> PriceOut:
    """The price of every model no other price matches (stored as the pattern `*`)."""
    data = parse(PriceBody, await json_object(request))
    return await _upsert(edge_of(request), DEFAULT_PRICE_MODEL, data, response)


@router.get("")
async def list_prices(request: Request) -> dict[str, list[PriceOut]]:
    """Every price, by model; the one for `*` is the default."""
    async with edge_of(request).db.session() as session:
        rows = (await session.scalars(select(Price).order_by(Price.model))).all()
    return {"data": [price_out(p) for p in rows]}


@router.delete("/{model:path}")
async def delete_price(model: str, request: Request) -> dict[str, object]:
    """Remove a model's price (the model then costs what its pattern or the default says)."""
    if model in _DEFAULT_NAMES:
        raise OpenAIError(409, "The default price cannot be deleted; PUT /api/prices/default with zeros makes other models free.",
                          code="default_price_required")
    edge = edge_of(request)
    async with edge.db.session() as session, session.begin():
        price = await session.scalar(select(Price).where(Price.model == model))
        if price is None:
            raise OpenAIError(404, f"No price for the model '{model}'.", code="price_not_found")
        await session.delete(price)
    await edge.catalog.changed()
    return {"model": model, "deleted": True}
