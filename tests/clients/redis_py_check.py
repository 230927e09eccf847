"""redis-py, with its default settings (RESP3 through HELLO 3), against a kvstore cluster.

Usage: python3 redis_py_check.py STAGE HOST:PORT[,HOST:PORT...]

Each stage exits 0 when every check held; a failed check raises (exit 1 with a traceback).
Driven by tests/tests/redis_py.rs, which starts the cluster.
"""

import sys
import time

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError, TimeoutError as RedisTimeoutError

# How long one operation may keep failing over between nodes (elections, a restarting node).
FAILOVER_BOUND_S = 60


def client(addr):
    host, port = addr.rsplit(":", 1)
    return redis.Redis(host=host, port=int(port))


def check_equal(got, want, what):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")


def uses_resp3(r):
    """The connection redis-py opened by default speaks RESP3: it sent HELLO 3 and the server
    agreed."""
    conn = r.connection_pool.get_connection()
    try:
        check_equal(conn.get_protocol(), 3, "redis-py's default protocol")
        proto = conn.handshake_metadata.get(b"proto", conn.handshake_metadata.get("proto"))
        check_equal(proto, 3, "the protocol HELLO agreed on")
    finally:
        r.connection_pool.release(conn)


def stage_basic(addrs):
    r = client(addrs[0])
    uses_resp3(r)
    check_equal(r.ping(), True, "PING")
    check_equal(r.set("py:greeting", "hello"), True, "SET")
    check_equal(r.get("py:greeting"), b"hello", "GET")
    check_equal(r.get("py:missing"), None, "GET of a missing key")
    every_byte = bytes(range(256))
    r.set("py:bytes", every_byte)
    check_equal(r.get("py:bytes"), every_byte, "a binary value")
    check_equal(r.exists("py:greeting", "py:bytes", "py:missing"), 2, "EXISTS")
    check_equal(r.incr("py:n"), 1, "INCR")
    check_equal(r.incrby("py:n", 41), 42, "INCRBY")
    check_equal(r.decr("py:n"), 41, "DECR")
    check_equal(r.decrby("py:n", 40), 1, "DECRBY")
    try:
        r.incr("py:greeting")
        raise AssertionError("INCR of a word succeeded")
    except ResponseError as e:
        check_equal(str(e), "value is not an integer or out of range", "INCR's error")
    check_equal(r.delete("py:greeting", "py:missing"), 1, "DEL")
    check_equal(r.get("py:greeting"), None, "GET after DEL")
    # Every node serves every key: reads are linearizable anywhere.
    for addr in addrs:
        check_equal(client(addr).get("py:n"), b"1", f"GET on {addr}")
    # Many small requests over the pool's connections, and a non-transactional pipeline.
    for i in range(100):
        r.set(f"py:k{i}", i)
    pipe = r.pipeline(transaction=False)
    for i in range(100):
        pipe.get(f"py:k{i}")
    check_equal(pipe.execute(), [str(i).encode() for i in range(100)], "pipelined GETs")


def stage_transaction(addrs):
    """r.pipeline() is a MULTI/EXEC transaction by default; WATCH aborts it when a watched key
    changed; a command that fails inside it fails alone (Redis does not roll back)."""
    r = client(addrs[0])
    other = client(addrs[1])
    pipe = r.pipeline()
    pipe.set("tx:a", 1).incr("tx:a").get("tx:a").delete("tx:none")
    check_equal(pipe.execute(), [True, 2, b"2", 0], "MULTI/EXEC replies")
    check_equal(other.get("tx:a"), b"2", "the transaction's write on another node")
    with r.pipeline() as watched:
        watched.watch("tx:w")
        check_equal(watched.get("tx:w"), None, "GET while watching")
        other.set("tx:w", "changed")
        watched.multi()
        watched.set("tx:w", "mine")
        try:
            watched.execute()
            raise AssertionError("EXEC succeeded although a watched key changed")
        except redis.WatchError:
            pass
    check_equal(r.get("tx:w"), b"changed", "the aborted transaction wrote nothing")

    def add_one(p):
        current = int(p.get("tx:counter") or 0)
        p.multi()
        p.set("tx:counter", current + 1)

    for _ in range(5):
        r.transaction(add_one, "tx:counter")
    check_equal(r.get("tx:counter"), b"5", "r.transaction with WATCH, five times")
    failing = r.pipeline()
    failing.set("tx:e", "word").incr("tx:e").set("tx:after", "x")
    results = failing.execute(raise_on_error=False)
    check_equal(results[0], True, "SET before the failing command")
    if not isinstance(results[1], ResponseError):
        raise AssertionError(f"INCR of a word inside EXEC: {results[1]!r}")
    check_equal(r.get("tx:after"), b"x", "the command after the failing one")


def eventually(check, what, bound_s=20):
    deadline = time.monotonic() + bound_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {bound_s} s")
        time.sleep(0.05)


def stage_ttl(addrs):
    """Expiry: SET EX/PX, SETEX, EXPIRE/PEXPIRE/EXPIREAT, TTL/PTTL, PERSIST, and a key that
    expires is gone on every node."""
    r = client(addrs[0])
    check_equal(r.set("ttl:ex", "v", ex=100), True, "SET EX")
    ttl = r.ttl("ttl:ex")
    if not 0 < ttl <= 100:
        raise AssertionError(f"TTL after SET EX 100: {ttl}")
    r.set("ttl:px", "v", px=100_000)
    pttl = r.pttl("ttl:px")
    if not 0 < pttl <= 100_000:
        raise AssertionError(f"PTTL after SET PX 100000: {pttl}")
    r.execute_command("SETEX", "ttl:setex", 50, "v")
    if not 0 < r.ttl("ttl:setex") <= 50:
        raise AssertionError("SETEX")
    r.set("ttl:plain", "v")
    check_equal(r.ttl("ttl:plain"), -1, "TTL of a key without expiry")
    check_equal(r.ttl("ttl:missing"), -2, "TTL of a missing key")
    check_equal(r.expire("ttl:plain", 30), True, "EXPIRE")
    check_equal(r.expire("ttl:missing", 30), False, "EXPIRE of a missing key")
    check_equal(r.persist("ttl:plain"), True, "PERSIST")
    check_equal(r.ttl("ttl:plain"), -1, "TTL after PERSIST")
    check_equal(r.expireat("ttl:plain", int(time.time()) + 1000), True, "EXPIREAT")
    if not 0 < r.ttl("ttl:plain") <= 1000:
        raise AssertionError("TTL after EXPIREAT")
    check_equal(r.set("ttl:plain", "again"), True, "SET without KEEPTTL")
    check_equal(r.ttl("ttl:plain"), -1, "SET clears the expiry")
    r.set("ttl:short", "v", px=300)
    r.set("ttl:stays", "v")
    check_equal(r.pexpire("ttl:stays", 400), True, "PEXPIRE")
    for addr in addrs:
        node = client(addr)
        eventually(lambda: node.get("ttl:short") is None, f"ttl:short expiring on {addr}")
        eventually(lambda: node.exists("ttl:stays") == 0, f"ttl:stays expiring on {addr}")
    check_equal(r.ttl("ttl:short"), -2, "TTL of an expired key")


def stage_scan(addrs):
    """scan_iter walks every key once, MATCH and COUNT included, on any node."""
    r = client(addrs[0])
    wanted = {f"sc:{n}".encode() for n in range(300)}
    for key in sorted(wanted):
        r.set(key, "v")
    for n in range(40):
        r.set(f"other:{n}", "v")
    for addr in addrs:
        node = client(addr)
        seen = list(node.scan_iter(match="sc:*", count=17))
        check_equal(len(seen), len(set(seen)), f"SCAN returned no key twice on {addr}")
        check_equal(set(seen), wanted, f"SCAN MATCH sc:* on {addr}")
    everything = set(r.scan_iter())
    check_equal(len(everything), 340, "SCAN of every key")
    check_equal(r.dbsize(), 340, "DBSIZE")
    check_equal(set(r.keys("sc:1?")), {f"sc:{n}".encode() for n in range(10, 20)}, "KEYS")


def stage_lock(addrs):
    """A lock as Redis's docs describe it: SET key token NX PX ms; released by its holder only
    (WATCH, compare, MULTI DEL), or by its expiry."""
    holder = client(addrs[0])
    rival = client(addrs[1])
    check_equal(holder.set("lock:job", "token-1", nx=True, px=30_000), True, "taking the lock")
    check_equal(rival.set("lock:job", "token-2", nx=True, px=30_000), None, "a taken lock")

    def release(r, token):
        with r.pipeline() as p:
            p.watch("lock:job")
            if p.get("lock:job") != token:
                p.unwatch()
                return False
            p.multi()
            p.delete("lock:job")
            return p.execute() == [1]

    check_equal(release(rival, b"token-2"), False, "a release by another holder")
    check_equal(holder.get("lock:job"), b"token-1", "the lock after a foreign release")
    check_equal(release(holder, b"token-1"), True, "the holder's release")
    check_equal(rival.set("lock:job", "token-2", nx=True, px=300), True, "the freed lock")
    eventually(
        lambda: holder.set("lock:job", "token-3", nx=True, px=30_000) is True,
        "the lock expiring",
    )
    check_equal(rival.get("lock:job"), b"token-3", "the new holder")


def retrying(clients, start, operation, what):
    """Runs operation(client), moving to the next node while the one tried is down, electing
    or loading; returns (result, index of the node that answered)."""
    deadline = time.monotonic() + FAILOVER_BOUND_S
    i = start
    while True:
        try:
            return operation(clients[i % len(clients)]), i % len(clients)
        except (RedisConnectionError, RedisTimeoutError, ResponseError) as e:
            retryable = not isinstance(e, ResponseError) or str(e).split(" ")[0] in (
                "TRYAGAIN",
                "TIMEOUT",
                "LOADING",
                "REMOVED",
            )
            if not retryable or time.monotonic() > deadline:
                raise AssertionError(f"{what} failed: {e!r}") from e
            i += 1
            time.sleep(0.1)


def stage_restart(addrs):
    """Writes keys one after another while the driver kills node 1 (the one this client starts
    on) and later restarts it; the client goes on through the other nodes. Then every key reads
    back from every node, the restarted one included.

    Protocol with the driver: prints `wrote N` after each write; reads `restarted` from stdin
    before the final reads."""
    clients = [client(a) for a in addrs]
    uses_resp3(clients[0])
    total = 300
    current = 0
    for n in range(total):
        _, current = retrying(
            clients, current, lambda c: c.set(f"rs:{n}", f"v{n}"), f"SET rs:{n}"
        )
        print(f"wrote {n + 1}", flush=True)
    check_equal(sys.stdin.readline().strip(), "restarted", "the driver's word")
    for index, addr in enumerate(addrs):
        for n in range(total):
            got, _ = retrying(
                [clients[index]], 0, lambda c: c.get(f"rs:{n}"), f"GET rs:{n} on {addr}"
            )
            check_equal(got, f"v{n}".encode(), f"rs:{n} on {addr}")
    print("verified", flush=True)


def stage_auth(addrs):
    """A cluster started with --requirepass (the password in KVSTORE_TEST_PASSWORD): redis-py
    logs in with password= (HELLO 3 AUTH default PASSWORD) and works; without a password, or
    with a wrong one, it is refused."""
    import os

    from redis.exceptions import AuthenticationError

    password = os.environ["KVSTORE_TEST_PASSWORD"]
    host, port = addrs[0].rsplit(":", 1)
    r = redis.Redis(host=host, port=int(port), password=password)
    uses_resp3(r)
    check_equal(r.set("py:auth", "yes"), True, "SET after logging in")
    check_equal(r.get("py:auth"), b"yes", "GET after logging in")
    for wrong in (None, password + "x"):
        try:
            redis.Redis(host=host, port=int(port), password=wrong).get("py:auth")
        except (AuthenticationError, ResponseError) as e:
            text = str(e)
            # redis-py drops the error code: NOAUTH's text, or WRONGPASS's.
            if "authenticat" not in text.lower() and "invalid username-password" not in text:
                raise AssertionError(f"password {wrong!r}: refused with {text!r}")
        else:
            raise AssertionError(f"password {wrong!r}: GET was not refused")


STAGES = {
    "auth": stage_auth,
    "basic": stage_basic,
    "transaction": stage_transaction,
    "ttl": stage_ttl,
    "scan": stage_scan,
    "lock": stage_lock,
    "restart": stage_restart,
}


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in STAGES:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(STAGES)}}} HOST:PORT[,HOST:PORT...]")
    check_equal(redis.__version__.split(".")[0], "8", "redis-py's major version")
    STAGES[sys.argv[1]](sys.argv[2].split(","))
    print(f"{sys.argv[1]}: ok", flush=True)


if __name__ == "__main__":
    main()
