from fastapi import APIRouter

from app.api.deps import CurrentClient, RegistryDep
from app.core.errors import NotFound
from app.schemas import ModelOut
from meta_core.artifact import Artifact

router = APIRouter(prefix="/models", tags=["models"])


def model_out(art: Artifact) -> ModelOut:
    m = art.manifest
    return ModelOut(
        name=art.name,
        version=art.version,
        task_kind=art.task_kind,
        input_shape=art.input_shape,
        n_outputs=art.n_outputs,
        n_classes=art.n_outputs if art.task_kind == "classification" else None,
        inner_loop=m["inner_loop"],
        preprocessing=m["preprocessing"],
        evaluation=m["evaluation"],
    )


@router.get("", response_model=list[ModelOut])
async def list_models(registry: RegistryDep, _: CurrentClient) -> list[ModelOut]:
    """The meta-models this service adapts."""
    return [model_out(a) for a in registry.models.values()]


@router.get("/{name}", response_model=ModelOut)
async def get_model(name: str, registry: RegistryDep, _: CurrentClient) -> ModelOut:
    """One meta-model (404 if unknown)."""
    if name not in registry.models:
        raise NotFound(f"no model {name!r}")
    return model_out(registry.models[name])
