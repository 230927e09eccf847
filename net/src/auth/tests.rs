//! A connection's login against an [`Authority`]: the NOAUTH gate, logins, refusals.

use super::*;

fn req(text: &str) -> Vec<Bytes> {
    text.split(' ')
        .map(|s| Bytes::copy_from_slice(s.as_bytes()))
        .collect()
}

fn error_text(reply: Option<Reply>) -> String {
    match reply {
        Some(Reply::Error(e)) => e,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn without_an_authority_everything_runs_as_before() {
    let mut conn = ConnectionAuth::new(None, "peer".into());
    assert!(conn.refusal(&req("SET k v")).is_none());
    assert!(conn.refusal(&req("RAFT.MEMBER LIST")).is_none());
    assert!(conn.hello_refusal().is_none());
    assert!(conn.login(Some(b"default"), b"anything").await.is_ok());
    assert!(conn.login(None, b"pw").await.is_err());
}

#[tokio::test]
async fn requirepass_gates_every_command_until_auth() {
    let authority = Arc::new(Authority::requirepass(b"s3cret"));
    let mut conn = ConnectionAuth::new(Some(authority), "127.0.0.1:5".into());
    for allowed in ["AUTH x", "HELLO 3", "PING", "QUIT", "RESET", "ping"] {
        assert!(conn.refusal(&req(allowed)).is_none(), "{allowed}");
    }
    for refused in [
        "GET k",
        "SET k v",
        "MULTI",
        "INFO",
        "CLIENT ID",
        "SEQ 1 1 SET k v",
    ] {
        assert_eq!(error_text(conn.refusal(&req(refused))), NOAUTH, "{refused}");
    }
    assert_eq!(
        error_text(conn.hello_refusal()),
        HELLO_NOAUTH,
        "HELLO without AUTH before a login"
    );
    let refused = conn.login(None, b"wrong").await.unwrap_err();
    assert_eq!(refused, Reply::error(WRONGPASS));
    assert!(!conn.must_close());
    assert!(conn.refusal(&req("GET k")).is_some(), "still not logged in");
    conn.login(None, b"s3cret").await.unwrap();
    assert!(conn.refusal(&req("SET k v")).is_none());
    assert!(
        conn.refusal(&req("RAFT.MEMBER LIST")).is_none(),
        "default may do all"
    );
    assert_eq!(conn.user_name(), "default");
    conn.reset();
    assert_eq!(
        error_text(conn.refusal(&req("GET k"))),
        NOAUTH,
        "RESET logs out"
    );
    let refused = conn.login(Some(b"alice"), b"s3cret").await.unwrap_err();
    assert_eq!(refused, Reply::error(WRONGPASS), "no such user");
}

#[tokio::test]
async fn a_default_user_with_nopass_needs_no_login_but_keeps_its_limits() {
    let users =
        users_file::parse("user default on nopass ~pub:* +@read\nuser off-one off nopass").unwrap();
    let authority = Arc::new(Authority::new(users));
    let mut conn = ConnectionAuth::new(Some(authority), "peer".into());
    assert!(conn.refusal(&req("GET pub:1")).is_none());
    assert_eq!(
        error_text(conn.refusal(&req("SET pub:1 v"))),
        "NOPERM this user has no permissions to run the 'set' command"
    );
    assert_eq!(
        error_text(conn.refusal(&req("GET secret"))),
        "NOPERM this user has no permissions to access one of the keys used as arguments"
    );
    assert!(
        conn.login(Some(b"off-one"), b"").await.is_err(),
        "a user that is off cannot log in"
    );
}

#[tokio::test]
async fn a_login_as_an_unknown_user_pays_for_a_real_hash_check() {
    let hash = password::hash(b"right").unwrap();
    let users = users_file::parse(&format!("user app on #{hash} ~* +@all")).unwrap();
    let authority = Arc::new(Authority::new(users));
    // The decoy is a slow (argon2id) hash, as the real users' are: an unknown name costs the
    // same work as a wrong password, so answer times do not tell which names exist.
    assert!(authority.decoy.as_ref().is_some_and(Secret::is_slow));
    let mut conn = ConnectionAuth::new(Some(authority.clone()), "peer".into());
    assert!(conn.login(Some(b"nobody"), b"right").await.is_err());
    assert!(conn.login(Some(b"app"), b"right").await.is_ok());
    assert!(
        Authority::requirepass(b"pw").decoy.is_none(),
        "requirepass is a fast digest: nothing to imitate"
    );
}
