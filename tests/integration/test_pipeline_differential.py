"""A differential test of the protocol under transaction pooling: seeded random sessions of the
extended protocol (named and unnamed Parse, Bind, Describe, Execute with and without a row limit,
portals of rows left suspended and executed, described or closed again, in the same batch or
later ones, Close, pipelines read in parts after a Flush, Sync) and the simple protocol
(multi-statement queries, BEGIN/COMMIT/ROLLBACK whose transactions span Syncs, DEALLOCATE [ALL]
and DISCARD ALL by either protocol, and a Query ending an unsynced batch of the extended protocol,
which PostgreSQL runs, or ignores after an error earlier in the batch, with or without a Sync
after it), with statements that succeed and that fail at Parse, at Bind and at Execute.
Each script runs on PostgreSQL itself and then through sluice with a small pool, several clients
taking turns on its backends and few prepared statements per backend (so that sluice closes and
prepares statements again behind the clients), and every client must receive the same replies.

What is compared, per client and in order: each message's type; the SQLSTATE of an ErrorResponse
or NoticeResponse; the tag of a CommandComplete; the values of a DataRow; the column names and
type OIDs of a RowDescription; the parameter types of a ParameterDescription; the status of a
ReadyForQuery. Left out, as they legitimately differ: ParameterStatus (sluice reports parameters
at other moments, e.g. after a simple DISCARD ALL, which it runs as RESET ALL), BackendKeyData
(sluice's own key), error and notice texts (only SQLSTATEs: an 08P01 for a Bind's parameter
count names sluice's backend statement, sluice_<n>), backend pids (no statement reads one).

What the scripts never do:
- what pooling legitimately changes: statements that leave session state (SET, temporary
  tables, LISTEN, SQL-level PREPARE: these pin a client, see test_transaction_pooling); one
  client waiting on another (each client writes only its own keys, and a client starts a
  transaction only while the pool has a free backend for it: with pool_size = 1 a second
  client's query would wait for the first client's transaction to end, on sluice but not on
  PostgreSQL, and the script, which reads one client at a time, would stall); in a failed
  transaction, a Describe of a statement (one sluice evicted from the backend must be prepared
  again there, which the failed transaction refuses with 25P02, where PostgreSQL, holding it,
  describes one that returns no rows), or a Bind with a wrong number of parameters (PostgreSQL
  checks the count, 08P01, before the failed transaction, 25P02, which the Parse sluice adds for
  an evicted statement gets first);
- what sluice does not follow: a Bind or Describe of the unnamed statement after a Parse or
  Close of it was skipped after an error (PostgreSQL keeps the one before; sluice cannot tell
  a skipped Parse from one that failed, which drops it, without a reply of its own to every
  Execute and Describe, and forgets it); extended messages after a simple Query in the same
  unsynced batch (a Query comes last, before a Sync or nothing: a Query that fails inside a
  transaction block leaves it failed, and the messages after it could then Execute the unnamed
  portal it leaves, which crashes PostgreSQL, see below, or Describe a statement there);
- what crashes PostgreSQL 15.18 itself: in a transaction block failed by a simple Query that
  failed while running (not at parse or plan time), an Execute of the unnamed portal, which is
  then that Query's own, left behind by the abort with its query text and plan list in the
  Query's message memory, freed by the next message; exec_execute_message reads both before it
  answers 25P02 (the backend dies with SIGSEGV when that memory went back to the system, every
  time with a query text of some 170 KB, else it answers 25P02). Portals the client bound before
  the failure are safe (an Execute gets 25P02, a Describe 25P02 or NoData), and so are a
  Describe or Close of that unnamed portal, but the scripts keep to the narrower rule of no
  Execute or Describe of a portal in a failed transaction.

The replies owed are read the way a driver reads them: after a Flush, every reply to the
messages sent so far (nothing more after an ErrorResponse until the Sync); after a Sync or a
Query, up to the ReadyForQuery. A divergence names the seed, the client, the step, the messages
sent at that step and the steps before it with their replies. SLUICE_IT_DIFF_SEEDS=FIRST-LAST
runs other seeds, SLUICE_IT_DIFF_CONTEXT=N shows N steps before a divergence.
SLUICE_IT_DIFF_LONG_SEEDS=FIRST-LAST: the seeds of the longer scripts of four clients.
A simple query may have up to three more behind it in the same write, sent before its replies
(SLUICE_IT_DIFF_PIPELINED_QUERIES=0: never).
"""

import os
import random
import socket
import struct

import harness
from harness import TestFailure

suite = harness.Suite()
test = suite.test

SEED_RANGE = os.environ.get("SLUICE_IT_DIFF_SEEDS", "1-8").split("-")
SEEDS = tuple(range(int(SEED_RANGE[0]), int(SEED_RANGE[-1]) + 1))
LONG_RANGE = os.environ.get("SLUICE_IT_DIFF_LONG_SEEDS", "1-3").split("-")
LONG_SEEDS = tuple(range(int(LONG_RANGE[0]), int(LONG_RANGE[-1]) + 1))
STEPS_PER_SEED = 110          # a step: one client sends a batch and reads what it is owed
LONG_STEPS = 260
READ_TIMEOUT = 10 * harness.TIMEOUT_SCALE
# How many steps before a divergence its report shows (more, to study one).
CONTEXT_STEPS = int(os.environ.get("SLUICE_IT_DIFF_CONTEXT", "8"))
PIPELINED_QUERIES = os.environ.get("SLUICE_IT_DIFF_PIPELINED_QUERIES") != "0"
NAMES = ("s1", "s2", "s3")    # statement names, the same for every client
PORTALS = ("", "p1", "p2")

# The statements: (SQL, what each parameter is). "int": an int or a value that fails its input
# conversion (22P02 at Bind); "key": one of the client's own keys of diff_uniq (23505 when it is
# taken); "div": a key of diff_div, whose row 0 divides by zero at Execute; "small": 0-3.
STATEMENTS = (
    ("SELECT $1::int + 1", ("int",)),
    ("SELECT $1::text || 'x'", ("text",)),
    ("SELECT k, x FROM diff_div ORDER BY k", ()),
    ("SELECT generate_series(1, $1::int)", ("small",)),
    ("INSERT INTO diff_uniq VALUES ($1::int, 'e')", ("key",)),
    ("SELECT 10 / x FROM diff_div WHERE k = $1::int", ("div",)),
    ("SELECT 1 / 0", ()),                     # 22012 at Bind: the planner folds it
    ("SELEC $1", ()),                         # 42601 at Parse
    ("SELECT * FROM diff_missing", ()),       # 42P01 at Parse
    ("BEGIN", ()),
    ("COMMIT", ()),
    ("ROLLBACK", ()),
    ("DEALLOCATE s1", ()),
    ("DEALLOCATE s2", ()),
    ("DEALLOCATE ALL", ()),
    ("DISCARD ALL", ()),
    ("", ()),                                 # EmptyQueryResponse
)

# Simple queries: {key} and {name} are filled in per use.
QUERIES = (
    "SELECT 1",
    "SELECT 1; SELECT 2",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "BEGIN; SELECT k FROM diff_div ORDER BY k",
    "SELECT k FROM diff_div ORDER BY k; SELECT 10 / x FROM diff_div WHERE k = 0",
    "INSERT INTO diff_uniq VALUES ({key}, 's')",
    "SELECT v FROM diff_uniq WHERE k = {key}",
    "DEALLOCATE {name}",
    "DEALLOCATE ALL",
    "DISCARD ALL",
    "SELECT 1 / 0; DEALLOCATE {name}",
    "DEALLOCATE {name}; SELECT 2",
    "SELECT 1; COMMIT",
    "SELEC 1",
)

# What each extended message is answered with: replies that may come before the last one, and
# the last ones. An ErrorResponse ends any of them.
INTERMEDIATE = {"DS": {"t"}, "E": {"D"}, "Q": None}
FINAL = {"P": {"1"}, "B": {"2"}, "DS": {"T", "n"}, "DP": {"T", "n"}, "E": {"C", "s", "I"},
         "C": {"3"}, "S": {"Z"}, "Q": {"Z"}}
ASYNC = {"N", "S", "A"}


class Diverged(Exception):
    pass


def close_message(kind, name):
    return harness.message("C", kind.encode() + harness.cstr(name))


def row_description(payload):
    count = struct.unpack("!H", payload[:2])[0]
    offset, columns = 2, []
    for _ in range(count):
        end = payload.index(b"\0", offset)
        type_oid = struct.unpack("!I", payload[end + 7:end + 11])[0]
        columns.append((payload[offset:end].decode(), type_oid))
        offset = end + 1 + 18
    return tuple(columns)


def parameter_description(payload):
    count = struct.unpack("!H", payload[:2])[0]
    return tuple(struct.unpack("!I", payload[2 + 4 * i:6 + 4 * i])[0] for i in range(count))


def reply_record(kind, payload):
    """What is compared of one reply, and a text to show it with."""
    if kind in ("E", "N"):
        fields = harness.parse_fields(payload)
        return (kind, fields.get("C")), f"{kind} {fields.get('C')} {fields.get('M', '')}"
    if kind == "C":
        tag = payload.rstrip(b"\0").decode()
        return (kind, tag), f"C {tag}"
    if kind == "D":
        row = harness.Wire._parse_row(payload)
        return (kind, row), f"D {row}"
    if kind == "T":
        columns = row_description(payload)
        return (kind, columns), f"T {columns}"
    if kind == "t":
        types = parameter_description(payload)
        return (kind, types), f"t {types}"
    if kind == "Z":
        status = payload.decode()
        return (kind, status), f"Z {status}"
    return (kind, None), kind


class Client:
    """One connection and what it is owed: the messages sent since the last read."""

    def __init__(self, endpoint, index):
        self.index = index
        self.wire = endpoint.wire(timeout=READ_TIMEOUT)
        self.wire.login()
        self.status = "I"
        self.unsynced = False   # messages sent since the last Sync
        self.skipping = False   # an error since the last Sync: the rest is ignored up to it
        self.owed = []          # (kind, note): note is what a Parse or Close does, if it runs
        self.statements = {}    # name -> parameter kinds, of the Parses that succeeded
        self.parsing = {}       # the same for Parses sent and not yet answered
        # A Parse or Close of the unnamed statement was skipped after an error: see
        # Script.unnamed_known.
        self.unnamed_unsure = False

    def holds_backend(self):
        return self.unsynced or self.status != "I"

    def parameters(self, name):
        return self.parsing.get(name, self.statements.get(name, ()))

    def send(self, items):
        """items: (owed kind or None, bytes, note)."""
        self.wire.send(b"".join(data for _, data, _ in items))
        for kind, _, note in items:
            if kind:
                self.owed.append((kind, note))
            if note and note[0] == "parse":
                self.parsing[note[1]] = note[2]
            # a Flush (kind None) leaves the pipeline open as much as a Parse does
            self.unsynced = kind not in ("S", "Q")

    def settle(self, note, ran):
        """What a Parse or Close did: ran, or failed or skipped (ran None)."""
        if not note:
            return
        if note[0] == "parse":
            self.parsing.pop(note[1], None)
            if ran:
                self.statements[note[1]] = note[2]
            elif note[1] == "" and ran is None:
                self.unnamed_unsure = True
            elif note[1] == "":
                self.statements.pop("", None)   # a failed Parse drops the unnamed statement
            if note[1] == "" and ran:
                self.unnamed_unsure = False
        elif note[0] == "close":
            if ran:
                self.statements.pop(note[1], None)
            elif note[1] == "":
                self.unnamed_unsure = True

    def read_owed(self):
        """Reads every reply owed for the messages sent; returns [(compared, shown)]."""
        replies = []
        owed, self.owed = self.owed, []
        for number, (kind, note) in enumerate(owed):
            if self.skipping and kind != "S":
                # After an error PostgreSQL ignores everything up to the Sync, a simple Query
                # too: no ReadyForQuery for it, and without a Sync after it the batch is open.
                self.settle(note, None)
                if kind == "Q" and number == len(owed) - 1:
                    self.unsynced = True
                continue
            if kind == "Q":
                self.statements.pop("", None)   # a query destroys the unnamed statement
                self.unnamed_unsure = False
            if kind == "S":
                self.skipping = False
            while True:
                try:
                    got, payload = self.wire.read_message()
                except socket.timeout:
                    replies.append((("timeout", kind), f"no reply to {kind} in {READ_TIMEOUT:.0f}s"))
                    raise Diverged(replies)
                except harness.ConnectionClosed:
                    replies.append((("closed", kind), "connection closed"))
                    raise Diverged(replies)
                if got == "S":
                    continue
                replies.append(reply_record(got, payload))
                if got in ASYNC:
                    continue
                if got == "Z":
                    self.status = payload.decode()
                if got == "E" and kind != "Q":
                    self.settle(note, False)
                    self.skipping = True
                    break
                intermediate = INTERMEDIATE.get(kind, set())
                if intermediate is None or got in intermediate:
                    if got == "Z":
                        break
                    continue
                self.settle(note, got in FINAL[kind])
                break   # the final reply, or one that is not what the message gets
        return replies


class Script:
    """The random choices of one seed: what a client sends next, from what it was told so far."""

    def __init__(self, seed, n_clients, pool_size):
        self.rng = random.Random(seed)
        self.n_clients = n_clients
        self.pool_size = pool_size
        self.batch = {}         # name -> parameter kinds of the batch's own Parses
        self.fresh = False      # the batch starts a pipeline outside a transaction

    def pick_client(self, clients):
        holders = [c for c in clients if c.holds_backend()]
        eligible = holders if len(holders) >= self.pool_size else clients
        return self.rng.choice(eligible)

    def value(self, client, kind):
        rng = self.rng
        if kind == "int":
            return rng.choice((1, 7, -3, 41, "x1"))
        if kind == "text":
            return rng.choice(("a", "bc"))
        if kind == "key":
            return client.index * 100 + rng.randrange(4)
        if kind == "div":
            return rng.choice((0, 1, 2, 5, 9))
        return rng.randrange(4)

    def statement(self):
        return self.rng.choice(STATEMENTS)

    def parse(self, client, name=None):
        sql, params = self.statement()
        if name is None:
            name = self.rng.choice(NAMES + ("", ""))
        self.batch[name] = params
        return (("P", harness.parse_message(sql, name), ("parse", name, params)),
                f"Parse {name or '-'} {sql!r}")

    def unnamed_known(self, client):
        """Whether the unnamed statement may be used. Not after a Parse or Close of it was
        skipped after an error: PostgreSQL then keeps the one before, and sluice forgets it
        (it cannot tell a Parse skipped from one that failed, which drops it: see the module's
        docstring), until the next Parse of it that succeeds or the next Query."""
        return "" in self.batch or not client.unnamed_unsure

    def statement_names(self, client):
        names = set(client.statements) | set(self.batch)
        if not self.unnamed_known(client):
            names.discard("")
        return sorted(names)

    def bind(self, client, portal=None, name=None):
        rng = self.rng
        if name is None:
            known = self.statement_names(client)
            name = rng.choice(known + [rng.choice(NAMES)])
        if portal is None:
            portal = rng.choice(PORTALS)
        kinds = self.batch.get(name, client.parameters(name))
        values = tuple(self.value(client, kind) for kind in kinds)
        if self.fresh and rng.random() < 0.1:
            # 08P01: checked before a failed transaction's 25P02, which a Bind of a statement
            # sluice must prepare again gets from that Parse instead; so only outside one
            values += (1,)
        return (("B", harness.bind_message(values, portal=portal, statement=name), None),
                f"Bind {portal or '-'} {name or '-'} {values}")

    def execute(self, portal=None, max_rows=None):
        if portal is None:
            portal = self.rng.choice(PORTALS)
        if max_rows is None:
            max_rows = self.rng.choice((0, 0, 0, 1, 2))
        return (("E", harness.execute_message(portal, max_rows), None),
                f"Execute {portal or '-'}{f' max {max_rows}' if max_rows else ''}")

    def describe(self, client):
        names = self.statement_names(client)
        # Not in a failed transaction: PostgreSQL describes a statement it holds that returns no
        # rows there, but one that sluice must prepare again on its backend cannot be (its Parse
        # gets 25P02), which pooling with few statements per backend cannot avoid.
        if self.rng.random() < 0.5 and names and client.status != "E":
            name = self.rng.choice(names)
            return (("DS", harness.describe_message("S", name), None),
                    f"Describe S {name or '-'}")
        portal = self.rng.choice(PORTALS)
        return (("DP", harness.describe_message("P", portal), None), f"Describe P {portal or '-'}")

    def close(self):
        if self.rng.random() < 0.6:
            name = self.rng.choice(NAMES + ("",))
            return (("C", close_message("S", name), ("close", name)), f"Close S {name or '-'}")
        portal = self.rng.choice(PORTALS)
        return (("C", close_message("P", portal), None), f"Close P {portal or '-'}")

    def extended_messages(self, client):
        """One to six messages of the extended protocol."""
        rng = self.rng
        items = []
        # In a failed transaction, no Execute or Describe of a portal made before it failed:
        # after a simple Query failed there, PostgreSQL 15.18 reads the freed text and plan of
        # that Query's unnamed portal at an Execute of it, and its backend may die (SIGSEGV).
        # Only the usual shape, whose Bind makes the portal in the same batch (or fails, and
        # the rest of the pipeline is skipped).
        failed = client.status == "E"
        while len(items) < rng.randint(1, 6):
            roll = rng.random()
            if failed and 0.45 <= roll < 0.87:
                roll = 0.0
            if roll < 0.3:
                # Parse, Bind, Execute of one statement: the usual shape
                portal = rng.choice(PORTALS)
                name = rng.choice(NAMES + ("",))
                items.append(self.parse(client, name))
                if not failed and rng.random() < 0.2:
                    # the statement just parsed (maybe evicted again by sluice already)
                    items.append((("DS", harness.describe_message("S", name), None),
                                  f"Describe S {name or '-'}"))
                items.append(self.bind(client, portal, name))
                if rng.random() < 0.3:
                    items.append((("DP", harness.describe_message("P", portal), None),
                                  f"Describe P {portal or '-'}"))
                items.append(self.execute(portal))
            elif roll < 0.45:
                items.append(self.parse(client))
            elif roll < 0.65:
                items.append(self.bind(client))
                items.append(self.execute())
            elif roll < 0.75:
                items.append(self.execute())
            elif roll < 0.87:
                items.append(self.describe(client))
            elif roll < 0.95:
                items.append(self.close())
            else:
                items.extend(self.suspended(client))
        return items

    def suspended(self, client):
        """A portal of rows left suspended by an Execute with a row limit, maybe executed again,
        described or closed in the same batch (later batches may go on with it)."""
        rng = self.rng
        name = rng.choice(NAMES + ("",))
        portal = rng.choice(PORTALS)
        sql, params = rng.choice((STATEMENTS[2], STATEMENTS[3]))
        self.batch[name] = params
        items = [(("P", harness.parse_message(sql, name), ("parse", name, params)),
                  f"Parse {name or '-'} {sql!r}"),
                 self.bind(client, portal, name)]
        for _ in range(rng.randint(1, 3)):
            roll = rng.random()
            if roll < 0.6:
                items.append(self.execute(portal, max_rows=rng.choice((1, 1, 2, 0))))
            elif roll < 0.8:
                items.append((("DP", harness.describe_message("P", portal), None),
                              f"Describe P {portal or '-'}"))
            else:
                items.append((("C", close_message("P", portal), None), f"Close P {portal or '-'}"))
        return items

    def query_in_pipeline(self, client):
        """A simple Query that ends a batch of the extended protocol before its Sync: PostgreSQL
        runs it (committing what the pipeline did outside a transaction block), or ignores it
        after an error in the batch."""
        sql = self.rng.choice(QUERIES).format(key=self.value(client, "key"),
                                              name=self.rng.choice(NAMES))
        return (("Q", harness.query_message(sql), None), f"Query {sql!r}")

    def next_step(self, client):
        """[((owed kind, bytes), shown)] for the client's next batch."""
        rng = self.rng
        self.batch = {}
        self.fresh = not client.unsynced and client.status == "I"
        if not client.unsynced and rng.random() < 0.25:
            sql = rng.choice(QUERIES).format(key=self.value(client, "key"), name=rng.choice(NAMES))
            if client.status != "I" and rng.random() < 0.3:
                sql = rng.choice(("COMMIT", "ROLLBACK"))
            items = [(("Q", harness.query_message(sql), None), f"Query {sql!r}")]
            while PIPELINED_QUERIES and rng.random() < 0.4 and len(items) < 4:
                items.append(self.query_in_pipeline(client))
            return items
        items = self.extended_messages(client)
        if rng.random() < 0.08:
            items.append(self.query_in_pipeline(client))
            if rng.random() < 0.5:
                return items
        if client.unsynced and rng.random() < 0.4 or rng.random() < 0.6:
            items.append((("S", harness.sync_message(), None), "Sync"))
        else:
            items.append(((None, harness.flush_message(), None), "Flush"))
        return items


def prepare_tables(t):
    t.cluster.sql("DROP TABLE IF EXISTS diff_div, diff_uniq;"
                  "CREATE TABLE diff_div (k int PRIMARY KEY, x int);"
                  "INSERT INTO diff_div VALUES (0, 0), (1, 1), (2, 2), (5, 5);"
                  "CREATE TABLE diff_uniq (k int PRIMARY KEY, v text);"
                  "ALTER TABLE diff_div OWNER TO app; ALTER TABLE diff_uniq OWNER TO app")


def run_script(t, endpoint, seed, n_clients, pool_size, reference=None, n_steps=STEPS_PER_SEED):
    """Runs seed's script; returns its steps [(client, shown, replies)]. With a reference (the
    steps PostgreSQL gave), stops at the first step that differs and fails, saying where."""
    t.cluster.sql("TRUNCATE diff_uniq")
    script = Script(seed, n_clients, pool_size)
    clients = [Client(endpoint, i) for i in range(n_clients)]
    steps = []

    def one_step(client, items):
        number = len(steps)
        shown = "; ".join(text for _, text in items)
        try:
            client.send([item for item, _ in items])
            replies = client.read_owed()
        except Diverged as stalled:
            replies = stalled.args[0]
        except OSError as error:
            replies = [(("closed", "send"), f"connection closed: {error}")]
        steps.append((client.index, shown, replies))
        if reference is not None:
            compare_step(seed, reference, steps)

    try:
        for _ in range(n_steps):
            client = script.pick_client(clients)
            one_step(client, script.next_step(client))
        # Those holding a backend end first: the others' last queries may need it.
        for client in sorted(clients, key=lambda c: not c.holds_backend()):
            if client.unsynced:
                one_step(client, [(("S", harness.sync_message(), None), "Sync")])
            if client.status != "I":
                one_step(client, [(("Q", harness.query_message("ROLLBACK"), None),
                                   "Query 'ROLLBACK'")])
        for client in clients:
            one_step(client, [(("Q", harness.query_message("SELECT 'end'"), None),
                               "Query \"SELECT 'end'\"")])
    finally:
        for client in clients:
            client.wire.close()
    return steps


def compare_step(seed, reference, steps):
    number = len(steps) - 1
    index, shown, replies = steps[number]
    want = reference[number] if number < len(reference) else None
    if want is not None and want[0] == index and want[1] == shown and \
            [r[0] for r in want[2]] == [r[0] for r in replies]:
        return
    lines = [f"seed {seed}: client {index} diverged at step {number}",
             "the steps before it (all clients, replies as both gave them):"]
    for earlier in range(max(0, number - CONTEXT_STEPS), number):
        client, text, got = steps[earlier]
        lines.append(f"  step {earlier}, client {client}: {text}")
        lines.append("      -> " + " | ".join(reply for _, reply in got))
    lines.append(f"sent: {shown}")
    if want is None or want[0] != index or want[1] != shown:
        lines.append(f"PostgreSQL's script had: {want[:2] if want else 'nothing'}")
    else:
        lines.append("PostgreSQL replied: " + " | ".join(text for _, text in want[2]))
    lines.append("sluice replied:     " + " | ".join(text for _, text in replies))
    raise TestFailure("\n".join(lines))


def differential(t, n_clients, pool_size, max_prepared_statements, seeds=SEEDS,
                 steps=STEPS_PER_SEED):
    prepare_tables(t)
    direct = harness.DirectEndpoint(t.cluster)
    pooled = t.sluice(settings={"pool_mode": "transaction",
                                "max_prepared_statements": max_prepared_statements},
                      databases={"appdb": t.cluster.database_line(pool_size=pool_size)})
    messages = 0
    for seed in seeds:
        reference = run_script(t, direct, seed, n_clients, pool_size, n_steps=steps)
        messages += sum(len(shown.split("; ")) for _, shown, _ in reference)
        for step, (_, shown, replies) in enumerate(reference):
            if replies and replies[-1][0][0] in ("timeout", "closed"):
                lines = [f"seed {seed}: PostgreSQL itself stalled at step {step}: the script reads "
                         "what it is not owed, or the backend died"]
                for earlier in range(max(0, step - CONTEXT_STEPS), step + 1):
                    client, text, got = reference[earlier]
                    lines.append(f"  step {earlier}, client {client}: {text}")
                    lines.append("      -> " + " | ".join(reply for _, reply in got))
                raise TestFailure("\n".join(lines))
        run_script(t, pooled, seed, n_clients, pool_size, reference, n_steps=steps)
    t.note(f"{len(seeds)} seeds of {steps} steps ({messages} messages), {n_clients} "
           f"clients, pool_size {pool_size}, max_prepared_statements {max_prepared_statements}")


@test("random pipelines of 2 clients on 1 backend keeping 1 prepared statement: every client gets "
      "the replies PostgreSQL gives it", timeout=180)
def two_clients_one_backend(t):
    differential(t, n_clients=2, pool_size=1, max_prepared_statements=1)


@test("random pipelines of 3 clients on 2 backends keeping 2 prepared statements each: every "
      "client gets the replies PostgreSQL gives it", timeout=180)
def three_clients_two_backends(t):
    differential(t, n_clients=3, pool_size=2, max_prepared_statements=2)


@test("longer random pipelines of 4 clients on 2 backends keeping 2 prepared statements each: "
      "every client gets the replies PostgreSQL gives it", timeout=180)
def four_clients_two_backends(t):
    differential(t, n_clients=4, pool_size=2, max_prepared_statements=2, seeds=LONG_SEEDS,
                 steps=LONG_STEPS)


if __name__ == "__main__":
    raise SystemExit(suite.run())
