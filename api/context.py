"""The long-lived objects of one running app (store, runner, price list), owned by its lifespan."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from api.entitlements import PriceList
from api.errors import InvalidInventory
from api.inventory import site_inventory
from api.metrics import Metrics
from api.runner import JobRunner, Verifier
from api.settings import Settings
from api.store import Store
from api.webhooks import Notifier

log = logging.getLogger(__name__)


@dataclass
class AppContext:
    settings: Settings
    store: Store
    prices: PriceList
    metrics: Metrics
    notifier: Notifier
    runner: JobRunner

    @classmethod
    def start(cls, settings: Settings, verifier: Verifier) -> AppContext:
        settings.check_secrets()
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        prices = PriceList.load(settings.resolve(settings.price_list))
        if prices.example:
            log.warning("the price list %s holds EXAMPLE prices", settings.price_list)
        store = Store.from_settings(settings)
        _sync_sites(store, settings)
        metrics = Metrics()
        notifier = Notifier(
            store=store,
            url=settings.webhook_url,
            secret=settings.webhook_secret,
            attempts=settings.webhook_attempts,
            backoff_s=settings.webhook_backoff_s,
            timeout_s=settings.webhook_timeout_s,
        )
        runner = JobRunner(
            settings=settings, store=store, verifier=verifier, notifier=notifier, metrics=metrics
        )
        runner.start()
        return cls(settings, store, prices, metrics, notifier, runner)

    def stop(self) -> None:
        self.runner.shutdown()
        self.notifier.close()
        self.store.close()


def _sync_sites(store: Store, settings: Settings) -> None:
    """Sites configured in settings win over the store's: the file is the operator's intent.

    Their inventories are held to the same rules as the API's (an untrusted one stops the start).
    """
    for customer_id, path in settings.sites.items():
        try:
            inventory = site_inventory(settings, path)
        except InvalidInventory as exc:
            raise ValueError(f"EMSOPS_SITES[{customer_id!r}]: {exc.message}: {path}") from None
        if store.get_customer(customer_id) is None:
            store.put_customer(customer_id=customer_id, name=customer_id, webhook_url=None)
        current = store.get_site(customer_id)
        store.put_site(
            customer_id=customer_id,
            inventory=str(inventory),
            installed_version=current["installed_version"] if current else None,
        )
