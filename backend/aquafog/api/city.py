"""What this fog knows of the city: the newest city mean the cloud sent (docs/design.md "City scale")."""

from __future__ import annotations

from flask import Blueprint, jsonify

from . import ctx
from .errors import not_found
from .params import arg_enum

bp = Blueprint("city", __name__)

PERIODS = {"today": "day", "month": "month"}


@bp.get("/city/mean")
def city_mean():
    """The newest city mean the cloud sent this fog (the last known one while the link is down).
    ---
    get:
      parameters:
      - {name: period, in: query, schema: {type: string, enum: !const PERIODS, default: today}}
      responses:
        200: FogCityMean
        400: BadRequest
        404: NotFound
    """
    period = arg_enum("period", tuple(PERIODS), "today")
    m = ctx().services.city_mean(PERIODS[period])
    if m is None:
        if not ctx().cfg.region:
            raise not_found("this fog is not part of a city: set `region` in its config (docs/design.md 'City scale'; an installed fog joins with `aquafog setup fog --join`)")
        raise not_found("the cloud has not sent a city mean yet: check the bridge (aquafog-fog/bridge/state) "
                        "and that the cloud runs")
    return jsonify({"period": {"kind": period, "key": m.key}, "meters": m.meters, "sum_ml": m.sum_ml,
                    "mean_litres": round(m.sum_ml / m.meters / 1000, 3) if m.meters else None,
                    "regions": list(m.regions), "as_of_ms": m.ts_ms})
