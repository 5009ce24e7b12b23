"""``/models``: the meta-models (artifacts) this service adapts."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import CurrentClient, RegistryDep
from app.schemas import MetaModelOut, problems

router = APIRouter(prefix="/models", tags=["models"], responses=problems(401, 413, 429, 503))


@router.get("", response_model=list[MetaModelOut])
async def list_meta_models(registry: RegistryDep, _: CurrentClient) -> list[MetaModelOut]:
    """Every version of every meta-model this service adapts (``default``: what new tasks get
    when they name no version)."""
    return [
        MetaModelOut.of(
            art, default=art is registry.meta_models[name], versions=registry.version_names(name)
        )
        for name in registry.names
        for art in (registry.versions[name][v] for v in registry.version_names(name))
    ]


@router.get("/{name}", response_model=MetaModelOut, responses=problems(404, 422))
async def get_meta_model(name: str, registry: RegistryDep, _: CurrentClient) -> MetaModelOut:
    """A meta-model's default version, with every version served (404 if unknown)."""
    art = registry.get(name)
    return MetaModelOut.of(art, default=True, versions=registry.version_names(name))
