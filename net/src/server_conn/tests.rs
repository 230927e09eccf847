use super::*;

fn args(words: &[&str]) -> Vec<Bytes> {
    words.iter().map(|w| Bytes::from(w.to_string())).collect()
}

fn error_text(reply: Reply) -> String {
    match reply {
        Reply::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn hello_switches_the_protocol_and_answers_redis_map() {
    let port = ClientPort::new(6379);
    let mut conn = port.connect("127.0.0.1:1".into());
    let reply = hello(&mut conn, &args(&["3", "SETNAME", "app"]), "master").await;
    assert_eq!(conn.protocol, Protocol::Resp3);
    let Reply::Map(pairs) = reply else {
        panic!("{reply:?}")
    };
    let keys: Vec<_> = pairs.iter().map(|(k, _)| k.clone()).collect();
    let expected: Vec<_> = [
        "server", "version", "proto", "id", "mode", "role", "modules",
    ]
    .iter()
    .map(|k| Reply::bulk(*k))
    .collect();
    assert_eq!(keys, expected);
    assert_eq!(pairs[2].1, Reply::Integer(3));
    assert_eq!(pairs[3].1, Reply::Integer(conn.id as i64));
    assert_eq!(
        client(&mut conn, &args(&["GETNAME"])),
        Reply::Bulk(Bytes::from("app"))
    );
    // Errors leave the protocol as it was.
    assert_eq!(
        error_text(hello(&mut conn, &args(&["4"]), "master").await),
        "NOPROTO unsupported protocol version"
    );
    assert_eq!(
        error_text(hello(&mut conn, &args(&["x"]), "master").await),
        "ERR Protocol version is not an integer or out of range"
    );
    assert_eq!(
        error_text(hello(&mut conn, &args(&["2", "foo"]), "master").await),
        "ERR Syntax error in HELLO option 'foo'"
    );
    assert_eq!(
        error_text(hello(&mut conn, &args(&["2", "setname"]), "master").await),
        "ERR Syntax error in HELLO option 'setname'"
    );
    assert_eq!(
        error_text(hello(&mut conn, &args(&["2", "AUTH", "bob", "pw"]), "master").await),
        "WRONGPASS invalid username-password pair or user is disabled."
    );
    assert_eq!(conn.protocol, Protocol::Resp3);
    assert!(matches!(
        hello(&mut conn, &args(&["2", "AUTH", "default", "any"]), "master").await,
        Reply::Map(_)
    ));
    assert_eq!(conn.protocol, Protocol::Resp2);
}

#[test]
fn client_names_are_validated_stored_and_listed() {
    let port = ClientPort::new(0);
    let mut a = port.connect("10.0.0.1:5".into());
    let b = port.connect("10.0.0.2:6".into());
    assert!(b.id > a.id, "ids come from one node-wide counter");
    assert_eq!(
        error_text(client(&mut a, &args(&["SETNAME", "a b"]))),
        "ERR Client names cannot contain spaces, newlines or special characters."
    );
    assert_eq!(client(&mut a, &args(&["GETNAME"])), Reply::Nil);
    assert_eq!(client(&mut a, &args(&["SETNAME", "worker-1"])), Reply::ok());
    assert_eq!(
        client(&mut a, &args(&["SETINFO", "LIB-NAME", "redis-py"])),
        Reply::ok()
    );
    assert_eq!(
        error_text(client(&mut a, &args(&["SETINFO", "lib-ver", "1 2"]))),
        "ERR lib-ver cannot contain spaces, newlines or special characters."
    );
    assert_eq!(
        error_text(client(&mut a, &args(&["SETINFO", "foo", "x"]))),
        "ERR Unrecognized option 'foo'"
    );
    assert_eq!(client(&mut a, &args(&["NO-EVICT", "on"])), Reply::ok());
    assert_eq!(
        error_text(client(&mut a, &args(&["NO-TOUCH", "maybe"]))),
        "ERR syntax error"
    );
    assert_eq!(
        error_text(client(&mut a, &args(&["NO-EVICT"]))),
        "ERR wrong number of arguments for 'client|no-evict' command"
    );
    assert_eq!(
        error_text(client(&mut a, &args(&["FOO"]))),
        "ERR unknown subcommand 'FOO'. Try CLIENT HELP."
    );
    let Reply::Verbatim(list) = client(&mut a, &args(&["LIST"])) else {
        panic!()
    };
    let list = String::from_utf8(list.to_vec()).unwrap();
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list}");
    assert!(lines[0].starts_with(&format!("id={} addr=10.0.0.1:5 ", a.id)));
    assert!(lines[0].contains(" name=worker-1 ") && lines[0].contains(" lib-name=redis-py "));
    assert!(lines[0].contains(" flags=e "), "{}", lines[0]);
    drop(b);
    assert_eq!(
        port.connected_clients(),
        1,
        "a closed connection leaves the list"
    );
    assert_eq!(client(&mut a, &args(&["SETNAME", ""])), Reply::ok());
    assert_eq!(client(&mut a, &args(&["GETNAME"])), Reply::Nil);
}

#[tokio::test]
async fn select_auth_and_reset_answer_as_redis_without_a_password() {
    assert_eq!(select(&args(&["0"])), Reply::ok());
    assert_eq!(
        error_text(select(&args(&["1"]))),
        "ERR DB index is out of range"
    );
    assert_eq!(
        error_text(select(&args(&["x"]))),
        "ERR value is not an integer or out of range"
    );
    let port = ClientPort::new(0);
    let mut conn = port.connect("x".into());
    assert!(
        error_text(auth(&mut conn, &args(&["pw"])).await).starts_with(
            "ERR AUTH <password> called without any password configured for the default user."
        )
    );
    assert_eq!(
        auth(&mut conn, &args(&["default", "pw"])).await,
        Reply::ok()
    );
    hello(&mut conn, &args(&["3", "SETNAME", "n"]), "master").await;
    assert_eq!(reset(&mut conn), Reply::Simple("RESET".into()));
    assert_eq!(conn.protocol, Protocol::Resp2);
    assert_eq!(client(&mut conn, &args(&["GETNAME"])), Reply::Nil);
}
