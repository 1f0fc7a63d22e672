"""``producers.query``: what /admin/query lets through, against a real (in-process) chDB."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from clickhouse_connect.driver.client import Client

from eventpipe.errors import QueryFailed, QueryRefused
from eventpipe.settings import Settings
from producers.query import ReadOnlyQuery
from sinks.clickhouse import connect, migrate


@pytest.fixture(scope="module")
def dsn(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"chdb://{tmp_path_factory.mktemp('chdb') / 'data'}"


@pytest.fixture(scope="module")
def writer(dsn: str) -> Iterator[Client]:
    c = connect(dsn)
    migrate(c)
    yield c
    c.close()


@pytest.fixture(scope="module")
def query(dsn: str, writer: Client) -> Iterator[ReadOnlyQuery]:
    settings = Settings(
        admin_query_max_execution_s=0.5,
        admin_query_max_result_rows=1000,
        admin_query_max_memory_bytes=100 * 1024 * 1024,
    )
    client = connect(dsn)
    yield ReadOnlyQuery(client, settings)
    client.close()


REFUSED = {
    "SELECT file('/etc/hostname')": "function file()",
    "SELECT `file`('/etc/hostname')": "function file()",
    "SELECT File('/etc/hostname')": "function File()",
    "SELECT length(file('/etc/hostname')) > 0": "function file()",
    "SELECT * FROM view(SELECT file('/etc/hostname'))": "function file()",
    "SELECT (SELECT file('/etc/hostname'))": "function file()",
    "SELECT * FROM file('/etc/hostname')": "table function file()",
    "SELECT * FROM url('http://127.0.0.1:1/', CSV)": "table function url()",
    "SELECT * FROM urlCluster('c', 'http://127.0.0.1:1/')": "table function urlCluster()",
    "SELECT * FROM s3('http://127.0.0.1:1/b/k', CSV)": "table function s3()",
    "SELECT * FROM remote('127.0.0.1', system.one)": "table function remote()",
    "SELECT * FROM remoteSecure('127.0.0.1', system.one)": "table function remoteSecure()",
    "SELECT 1 IN (SELECT * FROM cluster('c', system.one))": "table function cluster()",
    "SELECT 1 WHERE 1 IN remote('127.0.0.1', system.one)": "table function remote()",
    "SELECT * FROM mysql('h:3306', 'd', 't', 'u', 'p')": "table function mysql()",
    "SELECT * FROM postgresql('h:5432', 'd', 't', 'u', 'p')": "table function postgresql()",
    "SELECT * FROM hdfs('hdfs://h/f', CSV)": "table function hdfs()",
    "SELECT * FROM executable('x.sh', CSV, 'a Int8')": "table function executable()",
    "SELECT * FROM input('a Int8')": "table function input()",
    "SELECT * FROM azureBlobStorage('c', 'k', 'b')": "table function azureBlobStorage()",
    "SELECT * FROM iceberg('http://127.0.0.1:1/t')": "table function iceberg()",
    "SELECT * FROM deltaLake('http://127.0.0.1:1/t')": "table function deltaLake()",
    "SELECT * FROM filesystem('/')": "table function filesystem()",
    "SELECT * FROM python(query)": "table function python()",
    "SELECT * FROM eval('SELECT 1')": "table function eval()",
    "SELECT * FROM loop(numbers(1))": "table function loop()",
    "SELECT * FROM dictionary('d')": "table function dictionary()",
    "SELECT * FROM format(CSV, '1')": "table function format()",
    "SELECT * FROM '/etc/hostname'": "not a plain table name",
    "SELECT * FROM `dev.json`": "not a plain table name",
    "SELECT dictGet('d', 'a', 1)": "function dictGet()",
    "SELECT dictGetString('d', 'a', 1)": "function dictGetString()",
    "SELECT aiGenerate('hi')": "function aiGenerate()",
    "SELECT getServerSetting('path')": "function getServerSetting()",
    "SELECT filesystemCapacity()": "function filesystemCapacity()",
    "SELECT showCertificate()": "function showCertificate()",
    "SELECT demangle('x')": "function demangle()",
    "SELECT 1 SETTINGS readonly = 0": "SETTINGS",
    "SELECT * FROM (SELECT 1 SETTINGS max_execution_time = 0)": "SETTINGS",
    "SELECT 1 FORMAT JSON": "FORMAT",
    "SELECT 1 INTO OUTFILE '/tmp/x'": "INTO OUTFILE",
    "SELECT 1; SELECT 2": "Multi-statements",
    "SELECT 1; DROP TABLE events": "Multi-statements",
    "": "Empty query",
    "SELEC 1": "Syntax error",
    "INSERT INTO events SELECT * FROM events": "not InsertQuery",
    "DROP TABLE events": "not DropQuery",
    "CREATE TABLE t (a Int8) ENGINE = Memory": "not CreateQuery",
    "ALTER TABLE events DELETE WHERE 1": "not AlterQuery",
    "OPTIMIZE TABLE events FINAL": "not OptimizeQuery",
    "SET readonly = 0": "not SetQuery",
    "SYSTEM FLUSH LOGS": "not SystemQuery",
    "KILL QUERY WHERE 1": "not KillQueryQuery",
    "EXPLAIN SELECT 1": "not ExplainQuery",
    "SHOW TABLES": "not ShowTablesQuery",
}


@pytest.mark.parametrize("sql", list(REFUSED))
def test_a_statement_that_could_leave_clickhouse_is_refused(query: ReadOnlyQuery, sql: str) -> None:
    with pytest.raises(QueryRefused) as exc:
        query(sql)
    assert REFUSED[sql] in exc.value.message
    assert exc.value.field == "sql" and exc.value.status == 400


ALLOWED = {
    "SELECT canonical_name, count() FROM events FINAL GROUP BY 1": [],
    "SELECT count() AS n FROM events_resolved WHERE resolved_person_id = 'u1'": [[0]],
    "SELECT count() > 0 AS ok FROM system.tables WHERE database = currentDatabase()": [[1]],
    "WITH t AS (SELECT number AS n FROM numbers(3)) SELECT sum(n) FROM t": [[3]],
    "SELECT * FROM (SELECT 1 AS a UNION ALL SELECT 2) ORDER BY a": [[1], [2]],
    "SELECT * FROM (VALUES (1), (2)) ORDER BY 1": [[1], [2]],
    "SELECT arrayMap(x -> x * 2, [1, 2]), format('{}-{}', 'a', 'b')": [[[2, 4], "a-b"]],
    "SELECT sum(number) OVER (ORDER BY number) FROM numbers(3)": [[0], [1], [3]],
    "SELECT count() FROM merge('system', '^one$')": [[1]],
    "SELECT * FROM view(SELECT 7)": [[7]],
    "SELECT a < 256 FROM generateRandom('a UInt8') LIMIT 1": [[True]],
    "SELECT toUInt8(getSetting('readonly'))": [[1]],
    "SELECT 1 -- a trailing comment": [[1]],
    "SELECT 1;": [[1]],
}


@pytest.mark.parametrize("sql", list(ALLOWED))
def test_ordinary_reads_run(query: ReadOnlyQuery, sql: str) -> None:
    _, rows = query(sql)
    assert rows == ALLOWED[sql]


LIMITS = {
    "SELECT count() FROM numbers(900000000) WHERE sipHash64(number) % 7 = 3": "Timeout exceeded",
    "SELECT count() FROM numbers(10000000000)": "max_rows_to_read",
    "SELECT number FROM numbers(5000)": "Limit for result",
    # 10 kB a row: the memory limit is hit within ~10k rows, long before the time limit
    "SELECT groupArray(repeat('x', 10000)) FROM numbers(10000000)": "memory limit",
}


@pytest.mark.parametrize("sql", list(LIMITS))
def test_a_runaway_query_is_stopped_by_its_limit(query: ReadOnlyQuery, sql: str) -> None:
    with pytest.raises(QueryFailed) as exc:
        query(sql)
    assert LIMITS[sql] in exc.value.message and exc.value.status == 400


def test_a_query_that_fails_half_way_leaves_nothing_for_the_next(query: ReadOnlyQuery) -> None:
    """chDB hands the blocks a failed stream left to the next query on the client, as its rows."""
    with pytest.raises(QueryFailed, match="throwIf"):
        query("SELECT throwIf(number = 50000) FROM numbers(900000)")
    assert query("SELECT 42 AS x") == (["x"], [[42]])


def test_the_readers_settings_stay_off_the_writers_session(
    query: ReadOnlyQuery, writer: Client
) -> None:
    assert query("SELECT toUInt8(getSetting('readonly'))")[1] == [[1]]
    assert writer.query("SELECT getSetting('readonly')").result_rows == [(0,)]
    writer.command("CREATE TABLE IF NOT EXISTS admin_query_probe (a Int8) ENGINE = Memory")
    writer.command("DROP TABLE admin_query_probe")
