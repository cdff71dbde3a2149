"""Opens each account's store once per process and closes them all at shutdown."""

from __future__ import annotations

import threading

from nudge.config import Settings
from nudge.privacy.keys import Keyring, keyring_for
from nudge.store.account import AccountStore


class StoreRegistry:
    """Account stores of one data directory, each encrypted with its account's data key.

    ``keyring`` defaults to the data directory's own (control store + master key), so every
    way of opening an account file (server, CLI, demo, benchmarks) encrypts it.
    """

    def __init__(self, settings: Settings, keyring: Keyring | None = None) -> None:
        self.settings = settings
        self.keyring = keyring if keyring is not None else keyring_for(settings)
        self._stores: dict[str, AccountStore] = {}
        self._lock = threading.Lock()

    def path_for(self, account_id: str):  # type: ignore[no-untyped-def]
        return self.settings.accounts_dir / account_id / "events.duckdb"

    def get(self, account_id: str) -> AccountStore:
        """The store of an account that exists (callers authenticate first)."""
        store = self._stores.get(account_id)
        if store is None:
            with self._lock:
                store = self._stores.get(account_id)
                if store is None:
                    store = AccountStore(account_id, self.path_for(account_id), self.settings,
                                         self.keyring.duckdb_key(
                                             account_id, self.path_for(account_id)))
                    self._stores[account_id] = store
        return store

    def close(self) -> None:
        with self._lock:
            stores, self._stores = list(self._stores.values()), {}
        for store in stores:
            store.close()
