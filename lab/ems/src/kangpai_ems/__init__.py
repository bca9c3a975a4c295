"""Kangpai reference EMS: meter simulator, gateway collector, platform, aggregation, migrations."""
