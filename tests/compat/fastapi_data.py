"""Reference data agent in FastAPI, equivalent to the tutorial's, used to prove drop-in compatibility.

Besides the tutorial's `GET /data`, it declares the parameters and bodies of the recommender routes as FastAPI
would (answers are stubs), so FastAPI's own 422 bodies can be compared with ours. The catalog check is imitated by
one unknown id, `no-such-item`, refused the way a pydantic validator refuses a value.
"""

from typing import List, Optional

from fastapi import FastAPI, Path, Query
from pydantic import BaseModel, ConfigDict, Field, constr, field_validator

app = FastAPI()
ID_PATTERN = "^[A-Za-z0-9._-]{1,64}$"


@app.get("/data")
async def get_data():
    return {"processed_data": "some_insights"}


class Interaction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str = Field(pattern=ID_PATTERN)
    item: str = Field(pattern=ID_PATTERN)
    weight: float = Field(gt=0, le=1000, allow_inf_nan=False)
    time: Optional[int] = Field(None, ge=0, le=253402300799)

    @field_validator("item")
    @classmethod
    def in_the_catalog(cls, item: str) -> str:
        if item == "no-such-item":
            raise ValueError("no item of the catalog has this id")
        return item


class Batch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    interactions: List[Interaction] = Field(min_length=1, max_length=1000)


@app.post("/interactions")
async def post_interactions(batch: Batch):
    return {"applied": len(batch.interactions)}


@app.get("/items")
async def get_items(offset: int = Query(0, ge=0), limit: int = Query(100, ge=1, le=1000)):
    return {"items": [], "offset": offset, "limit": limit}


@app.get("/insights/users/{user}")
async def get_user_insights(
    user: str = Path(pattern=ID_PATTERN),
    limit: int = Query(10, ge=1, le=100),
    category: List[constr(min_length=1, max_length=40)] = Query([], max_length=10),
):
    return {"user": user}
