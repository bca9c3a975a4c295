"""Module carbon (3.3+): CO2 emissions of the aggregated energy, by grid emission factor."""

from __future__ import annotations

from typing import Any

from .. import filters
from ..httpjson import Request, Response, Routes


def routes(platform: Any) -> Routes:
    def carbon(request: Request) -> Response:
        where, params = filters.where(request, "a.interval_start", "a.meter_id")
        rows = platform.fetch(
            "SELECT a.meter_id, sum(a.energy_kwh), sum(a.energy_kwh * f.kg_co2_per_kwh)"
            " FROM aggregates a CROSS JOIN LATERAL (SELECT kg_co2_per_kwh FROM emission_factors"
            "   WHERE valid_from <= a.interval_start::date ORDER BY valid_from DESC LIMIT 1) f"
            f" {where} GROUP BY a.meter_id ORDER BY a.meter_id", params)
        return Response(200, [{"meter_id": m, "energy_kwh": e, "kg_co2": kg}
                              for m, e, kg in rows])

    return {("GET", "/api/v1/carbon"): carbon}
