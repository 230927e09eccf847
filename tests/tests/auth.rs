//! Passwords and users on the client port: `--requirepass` (flag and environment variable),
//! `--users-file` with read-only, prefix-limited and admin users, the NOAUTH gate, NOPERM
//! refusals, the per-connection limit on failed logins, and the clients that must log in:
//! redis-cli -a, redis-py with password=, KvClient, and the kvstore command line.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use e2e::resp_wire::{RespConn, RespValue};
use e2e::{kvstore_bin, TestCluster};
use net::client::{ClientConfig, ClientError, Credentials, KvClient};

const BOUND: Duration = Duration::from_secs(30);
const NOAUTH: &str = "NOAUTH Authentication required.";
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
const NOPERM_KEY: &str =
    "NOPERM this user has no permissions to access one of the keys used as arguments";

fn noperm_command(name: &str) -> String {
    format!("NOPERM this user has no permissions to run the '{name}' command")
}

fn error(text: &str) -> RespValue {
    RespValue::Error(text.to_string())
}

fn ok() -> RespValue {
    RespValue::Simple("OK".into())
}

fn call(conn: &mut RespConn, args: &str) -> RespValue {
    let words: Vec<&str> = args.split(' ').collect();
    conn.call_str(&words).expect("a reply")
}

fn login(user: Option<&str>, password: &str) -> Credentials {
    Credentials {
        user: user.map(str::to_string),
        password: password.to_string(),
    }
}

/// A cluster of `n` nodes whose clients must log in: the password from the environment on
/// node 1 (so it is not in argv), from the flag on the others.
async fn cluster_with_requirepass(n: u64, password: &str) -> TestCluster {
    let mut cluster = TestCluster::configure(n);
    cluster.login = Some(login(None, password));
    for id in 1..=n {
        let mut cmd = cluster.serve_command(id);
        if id == 1 {
            cmd.env("KVSTORE_REQUIREPASS", password);
        } else {
            cmd.args(["--requirepass", password]);
        }
        cluster.start_with(id, cmd);
    }
    cluster.wait_for_leader(BOUND).await;
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auth_every_data_command_is_refused_noauth() {
    let cluster = cluster_with_requirepass(3, "s3cret pass").await;
    for addr in cluster.servers() {
        let mut conn = RespConn::connect(&addr).unwrap();
        for command in [
            "GET k",
            "SET k v",
            "DEL k",
            "MGET a b",
            "INCR n",
            "KEYS *",
            "SCAN 0",
            "DBSIZE",
            "FLUSHALL",
            "MULTI",
            "WATCH k",
            "INFO",
            "CONFIG GET port",
            "CLIENT LIST",
            "RAFT.MEMBER LIST",
            "RAFT.TRANSFER-LEADER 2",
            "KVSTORE.BACKUP",
            "SEQ 7 1 SET k v",
        ] {
            assert_eq!(
                call(&mut conn, command),
                error(NOAUTH),
                "{command} on {addr}"
            );
        }
        assert_eq!(call(&mut conn, "PING"), RespValue::Simple("PONG".into()));
        assert!(
            matches!(call(&mut conn, "HELLO 3"), RespValue::Error(e) if e.starts_with("NOAUTH HELLO must be called"))
        );
        assert_eq!(call(&mut conn, "AUTH wrong"), error(WRONGPASS));
        assert_eq!(
            conn.call_str(&["AUTH", "s3cret pass"]).unwrap(),
            ok(),
            "{addr}"
        );
        assert_eq!(
            call(&mut conn, "SET k v"),
            ok(),
            "{addr}: followers forward"
        );
        assert_eq!(call(&mut conn, "RESET"), RespValue::Simple("RESET".into()));
        assert_eq!(call(&mut conn, "GET k"), error(NOAUTH), "RESET logs out");
    }
    // HELLO 3 AUTH default PASSWORD logs in and switches the protocol at once.
    let mut conn = RespConn::connect(&cluster.servers()[0]).unwrap();
    let hello = conn
        .call_str(&["HELLO", "3", "AUTH", "default", "s3cret pass"])
        .unwrap();
    assert!(matches!(hello, RespValue::Map(_)), "{hello:?}");
    assert_eq!(
        call(&mut conn, "GET k"),
        RespValue::Bulk(Some(b"v".to_vec()))
    );

    // The harness's own client logs in on every connection (INFO needs the admin right).
    cluster.client().set(b"kv", b"client").await.unwrap();
    assert!(cluster.info(1).await.is_some());
    let wrong = ClientConfig {
        credentials: Some(login(None, "nope")),
        ..Default::default()
    };
    match KvClient::with_config(cluster.servers(), wrong)
        .get(b"kv")
        .await
    {
        Err(ClientError::Server(e)) => assert_eq!(e, WRONGPASS),
        other => panic!("a wrong password is not retried as unavailable: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_redis_py_and_the_kvstore_cli_log_in() {
    let cluster = cluster_with_requirepass(1, "pw-123").await;
    let addr = cluster.servers()[0].clone();
    let (host, port) = addr.rsplit_once(':').unwrap();
    let redis_cli = |extra: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-h", host, "-p", port, "--no-auth-warning"])
            .args(extra)
            .output()
            .expect("redis-cli is installed");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(redis_cli(&["-a", "pw-123", "SET", "cli", "yes"]), "OK");
    assert_eq!(redis_cli(&["-a", "pw-123", "GET", "cli"]), "yes");
    assert_eq!(redis_cli(&["GET", "cli"]), NOAUTH);
    // redis-cli reports the failed AUTH on stderr, then runs the command unauthenticated.
    assert_eq!(redis_cli(&["-a", "wrong", "GET", "cli"]), NOAUTH);

    let py = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/clients/redis_py_check.py"
        ))
        .args(["auth", &addr])
        .env("KVSTORE_TEST_PASSWORD", "pw-123")
        .output()
        .expect("python3 runs");
    assert!(
        py.status.success() && String::from_utf8_lossy(&py.stdout).contains("auth: ok"),
        "redis-py: {}\n{}",
        String::from_utf8_lossy(&py.stdout),
        String::from_utf8_lossy(&py.stderr)
    );

    // The kvstore command line: refused without a password, then with KVSTORE_PASSWORD and
    // with --password.
    let kvstore = |args: &[&str], env_password: Option<&str>| {
        let mut cmd = Command::new(kvstore_bin());
        cmd.args(args).args(["--servers", &addr]);
        cmd.env_remove("KVSTORE_PASSWORD");
        if let Some(p) = env_password {
            cmd.env("KVSTORE_PASSWORD", p);
        }
        let out = cmd.output().expect("kvstore runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, _, stderr) = kvstore(&["set", "k", "v"], None);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains(NOAUTH), "{stderr}");
    let (code, _, stderr) = kvstore(&["set", "k", "v"], Some("wrong"));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("WRONGPASS"), "{stderr}");
    assert!(
        !stderr.contains("wrong"),
        "the password is never echoed: {stderr}"
    );
    let (code, _, stderr) = kvstore(&["set", "k", "v"], Some("pw-123"));
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stdout, stderr) = kvstore(&["get", "k", "--password", "pw-123"], None);
    assert_eq!((code, stdout.as_str()), (Some(0), "v"), "{stderr}");
    let (code, stdout, stderr) = kvstore(&["member", "list", "--password", "pw-123"], None);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("voter"), "{stdout}");
    let (code, stdout, stderr) = kvstore(&["status"], Some("pw-123"));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("leader"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_are_rate_limited_then_the_connection_closed() {
    let cluster = cluster_with_requirepass(1, "right").await;
    let addr = cluster.servers()[0].clone();
    let mut guesser = RespConn::connect(&addr).unwrap();
    for guess in 1..=5 {
        assert_eq!(
            guesser
                .call_str(&["AUTH", &format!("guess-{guess}")])
                .unwrap(),
            error(WRONGPASS),
            "guess {guess}"
        );
    }
    // After the fifth failure the node closed the connection: a sixth guess gets no answer.
    assert!(
        guesser.call_str(&["AUTH", "right"]).is_err(),
        "the connection is closed after five failures"
    );
    // Others are served meanwhile, and the right password still works on a new connection.
    let mut other = RespConn::connect(&addr).unwrap();
    assert_eq!(call(&mut other, "AUTH right"), ok());
    assert_eq!(call(&mut other, "SET after guesses"), ok());
    let logs = cluster.logs();
    assert!(logs.contains("client login failed"), "{logs}");
    assert!(logs.contains("default"), "the user name is logged");
    assert!(
        !logs.contains("guess-"),
        "a password is never logged:\n{logs}"
    );
}

/// A users file written as an operator would: hashes from `kvstore hash-password`.
fn users_file(dir: &std::path::Path) -> std::path::PathBuf {
    let hash = |password: &str| {
        let mut child = Command::new(kvstore_bin())
            .arg("hash-password")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("kvstore hash-password runs");
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let line = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert!(line.starts_with("#$argon2id$"), "{line}");
        assert!(!line.contains(password));
        line
    };
    let text = format!(
        "# who may do what\nuser admin on {} ~* +@all\nuser app on {} ~app:* +@read +@write\nuser ro on {} allkeys +@read\nuser gone off {} ~* +@all\n",
        hash("admin-pw"),
        hash("app-pw"),
        hash("ro-pw"),
        hash("gone-pw"),
    );
    let path = dir.join("users.acl");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_have_their_rights_and_no_more() {
    let mut cluster = TestCluster::configure(1);
    let file = users_file(cluster.dir.path());
    cluster.extra_args = vec!["--users-file".into(), file.display().to_string()];
    cluster.login = Some(login(Some("admin"), "admin-pw"));
    cluster.start_node(1);
    cluster.wait_for_leader(BOUND).await;
    let addr = cluster.servers()[0].clone();
    let as_user = |user: &str, password: &str| {
        let mut conn = RespConn::connect(&addr).unwrap();
        assert_eq!(
            conn.call_str(&["AUTH", user, password]).unwrap(),
            ok(),
            "{user}"
        );
        conn
    };

    let mut admin = as_user("admin", "admin-pw");
    assert_eq!(call(&mut admin, "SET other 1"), ok());
    assert_eq!(call(&mut admin, "SET app:1 1"), ok());
    assert!(matches!(
        call(&mut admin, "RAFT.MEMBER LIST"),
        RespValue::Array(_)
    ));

    // A read-only user reads everything and writes nothing.
    let mut ro = as_user("ro", "ro-pw");
    assert_eq!(
        call(&mut ro, "GET other"),
        RespValue::Bulk(Some(b"1".to_vec()))
    );
    assert_eq!(call(&mut ro, "SET other 2"), error(&noperm_command("set")));
    assert_eq!(
        call(&mut ro, "SEQ 9 1 SET other 2"),
        error(&noperm_command("set"))
    );
    assert_eq!(
        call(&mut ro, "FLUSHALL"),
        error(&noperm_command("flushall"))
    );
    assert_eq!(call(&mut ro, "INFO"), error(&noperm_command("info")));

    // A prefix-limited user touches only its keys, in a transaction too.
    let mut app = as_user("app", "app-pw");
    assert_eq!(call(&mut app, "SET app:2 x"), ok());
    assert_eq!(call(&mut app, "SET other x"), error(NOPERM_KEY));
    assert_eq!(call(&mut app, "GET other"), error(NOPERM_KEY));
    assert_eq!(call(&mut app, "MSET app:3 a other b"), error(NOPERM_KEY));
    assert_eq!(call(&mut app, "KEYS *"), error(NOPERM_KEY));
    assert_eq!(call(&mut app, "FLUSHALL"), error(NOPERM_KEY));
    assert_eq!(call(&mut app, "MULTI"), ok());
    assert_eq!(
        call(&mut app, "SET app:4 y"),
        RespValue::Simple("QUEUED".into())
    );
    assert_eq!(call(&mut app, "SET other y"), error(NOPERM_KEY));
    assert!(matches!(call(&mut app, "EXEC"), RespValue::Error(e) if e.starts_with("EXECABORT")));
    assert_eq!(
        call(&mut admin, "GET app:4"),
        RespValue::Bulk(None),
        "nothing applied"
    );
    assert_eq!(
        call(&mut admin, "GET other"),
        RespValue::Bulk(Some(b"1".to_vec()))
    );

    // Operator commands need @admin.
    for command in [
        "RAFT.MEMBER LIST",
        "RAFT.TRANSFER-LEADER 1",
        "KVSTORE.BACKUP",
        "CONFIG GET port",
    ] {
        let refused = call(&mut app, command);
        assert!(
            matches!(&refused, RespValue::Error(e) if e.starts_with("NOPERM")),
            "{command}: {refused:?}"
        );
    }
    let admin_login = cluster.login.replace(login(Some("app"), "app-pw"));
    let (ok_app, _, stderr) = cluster.kvstore(&["member", "list"]);
    cluster.login = admin_login;
    assert!(!ok_app, "a non-admin cannot list members");
    assert!(stderr.contains("NOPERM"), "{stderr}");
    let (ok_admin, stdout, stderr) = cluster.kvstore(&["member", "list"]);
    assert!(ok_admin, "{stderr}");
    assert!(stdout.contains("voter"), "{stdout}");

    // A user that is off, a user that does not exist, and HELLO ... AUTH.
    let mut conn = RespConn::connect(&addr).unwrap();
    assert_eq!(call(&mut conn, "AUTH gone gone-pw"), error(WRONGPASS));
    assert_eq!(call(&mut conn, "AUTH nobody x"), error(WRONGPASS));
    assert_eq!(
        call(&mut conn, "AUTH ro-pw"),
        error(WRONGPASS),
        "no default user"
    );
    let hello = call(&mut conn, "HELLO 2 AUTH ro ro-pw");
    assert!(matches!(hello, RespValue::Array(_)), "{hello:?}");
    assert_eq!(call(&mut conn, "SET k v"), error(&noperm_command("set")));
}

#[test]
fn a_bad_users_file_stops_the_node_with_its_line() {
    let cluster = TestCluster::configure(1);
    let file = cluster.dir.path().join("users.acl");
    std::fs::write(
        &file,
        "user a on nopass ~* +@all\nuser b on >plain ~* +@read\n",
    )
    .unwrap();
    let out = cluster
        .serve_command(1)
        .arg("--users-file")
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "{}:2: user `b`: plain-text passwords",
            file.display()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("plain ~"), "{stderr}");
}
