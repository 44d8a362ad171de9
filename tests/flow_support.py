"""Running the real flow from tests: Metaflow's Runner, an isolated datastore, Twilio intercepted."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from metaflow import Runner

from enrich.store import open_store

ROOT = Path(__file__).resolve().parent.parent
FLOW_FILE = ROOT / "flows" / "enrichment_flow.py"
INJECT = Path(__file__).resolve().parent / "support" / "inject"
TOKEN = "test-auth-token-5f3c9a1e7b"
TWILIO_ENV = {"TWILIO_ACCOUNT_SID": "AC" + "1" * 32, "TWILIO_AUTH_TOKEN": TOKEN,
              "TWILIO_FROM": "+15005550006", "TWILIO_TO": "+33600000001"}


#: A small file covering accents, TAXIS (not a word match), an ambiguous wording, 0 and boundary amounts.
SMALL = """id,amount,wording
1,-283.66,PRLV CE PROVENCE ALPES CORSE REU
2,303.28,CARTE 06/10/21 69 TOTO
3,-474.99,*COTISATION TATA
4,0,VIR taxi GARE
5,-327.7,TH TAXI TOTO FR
6,300,Tutu remb.
7,-200.00,TAXIS G7
"""


@dataclass
class FlowResult:
    returncode: int
    run: object
    stdout: str
    stderr: str
    database: Path | str
    sms: list[dict]

    @property
    def store(self):
        """The run's database, read through the project's store."""
        from enrich.store import open_store

        return open_store(self.database)

    def query(self, sql: str, params=()) -> list[tuple]:
        """Rows of one statement (``?`` placeholders, on either backend) on the run's database, read
        through the store (read-only): the test process opens an SQLite file with the project's
        SQLite library only."""
        from enrich.store.ledger import Dialect

        store = open_store(self.database, read_only=True)
        return store.rows(Dialect(numbered=store.backend == "postgresql").sql(sql), params)

    def count(self, table: str) -> int:
        return self.query(f"SELECT COUNT(*) FROM {table}")[0][0]


def run_flow(workdir: Path, transactions: Path | None = None, *, database: Path | str | None = None,
             twilio: bool = True, twilio_status: int = 201, fault: str = "",
             **parameters) -> FlowResult:
    """Run the flow with Runner in ``workdir``; every Twilio request is intercepted and logged."""
    database = database or workdir / "database.db"
    sms_log = workdir / f"sms-{len(list(workdir.glob('sms-*.jsonl')))}.jsonl"
    env = {"PYTHONPATH": os.pathsep.join([str(INJECT), str(ROOT)]), "ENRICH_TEST_TWILIO_LOG": str(sms_log),
           "ENRICH_TEST_TWILIO_STATUS": str(twilio_status), "ENRICH_TEST_FAULT": fault}
    if twilio:
        env.update(TWILIO_ENV)
    if transactions is not None:
        parameters["transactions"] = str(transactions)
    with Runner(str(FLOW_FILE), show_output=False, cwd=str(workdir), env=env) as runner:
        with runner.run(database=str(database), **parameters) as running:
            result = FlowResult(running.returncode, running.run, running.stdout, running.stderr,
                                database, [])
    if sms_log.exists():
        result.sms = [json.loads(line) for line in sms_log.read_text().splitlines()]
    return result


def run_once_per_module(tmp_path_factory, name: str, **parameters) -> FlowResult:
    """One real flow run (default input: the bundled sample) for a module-scoped fixture.

    Module fixtures cannot use the function-scoped isolation of conftest.py, so this sets
    the same temporary Metaflow datastore and user for the run.
    """
    workdir = tmp_path_factory.mktemp(name)
    with pytest.MonkeyPatch.context() as env:
        datastore = tmp_path_factory.getbasetemp() / "metaflow-datastore"
        datastore.mkdir(exist_ok=True)
        env.setenv("METAFLOW_DATASTORE_SYSROOT_LOCAL", str(datastore))
        env.setenv("USER", "tester")
        result = run_flow(workdir, **parameters)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
