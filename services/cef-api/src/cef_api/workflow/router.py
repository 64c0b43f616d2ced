"""HTTP endpoints of workflow."""

from fastapi import APIRouter

router = APIRouter(prefix="/v1", tags=["workflow"])
