"""Reference recommendation agent in FastAPI, equivalent to the tutorial's.

Differences from the tutorial, all needed to test against it: the data agent's address comes from DATA_URL
(the tutorial hard-codes http://data:8000), it declares the same optional `limit` parameter as the Rust agent, and
the same preferences route and model, so FastAPI's own 422 bodies can be compared with ours.
"""

import os
from typing import List, Optional

import httpx
from fastapi import FastAPI, Path, Query
from pydantic import BaseModel, ConfigDict, Field, constr

app = FastAPI()
DATA_URL = os.environ.get("DATA_URL", "http://data:8000")


@app.get("/recommend")
async def get_recommendation(limit: Optional[int] = Query(None, ge=1, le=100)):
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{DATA_URL}/data")
        return {"recommendation": "Based on data", "data": response.json()}


class Preferences(BaseModel):
    model_config = ConfigDict(extra="forbid")
    categories: List[constr(min_length=1, max_length=40)] = Field(default_factory=list, max_length=10)
    max_results: int = Field(10, ge=1, le=100)


@app.put("/users/{user_id}/preferences")
async def put_preferences(preferences: Preferences, user_id: str = Path(pattern="^[A-Za-z0-9._-]{1,64}$")):
    return preferences
