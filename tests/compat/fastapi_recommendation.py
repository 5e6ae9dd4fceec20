"""Reference recommendation agent in FastAPI, equivalent to the tutorial's.

Differences from the tutorial, both needed to test against it: the data agent's address comes from DATA_URL
(the tutorial hard-codes http://data:8000), and it declares the same optional `limit` parameter as the Rust agent
so FastAPI's own 422 bodies can be compared with ours.
"""

import os
from typing import Optional

import httpx
from fastapi import FastAPI, Query

app = FastAPI()
DATA_URL = os.environ.get("DATA_URL", "http://data:8000")


@app.get("/recommend")
async def get_recommendation(limit: Optional[int] = Query(None, ge=1, le=100)):
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{DATA_URL}/data")
        return {"recommendation": "Based on data", "data": response.json()}
