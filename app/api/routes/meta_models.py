"""``/models``: the meta-models (artifacts) this service adapts."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import CurrentClient, RegistryDep
from app.schemas import MetaModelOut, problems

router = APIRouter(prefix="/models", tags=["models"], responses=problems(401, 413, 429, 503))


@router.get("", response_model=list[MetaModelOut])
async def list_meta_models(registry: RegistryDep, _: CurrentClient) -> list[MetaModelOut]:
    """The meta-models this service adapts."""
    return [MetaModelOut.of(m) for m in registry.meta_models.values()]


@router.get("/{name}", response_model=MetaModelOut, responses=problems(404))
async def get_meta_model(name: str, registry: RegistryDep, _: CurrentClient) -> MetaModelOut:
    """One meta-model (404 if unknown)."""
    return MetaModelOut.of(registry.get(name))
