"""Reference data agent in FastAPI, equivalent to the tutorial's, used to prove drop-in compatibility."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/data")
async def get_data():
    return {"processed_data": "some_insights"}
