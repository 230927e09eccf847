use super::*;

#[test]
fn globs_match_as_redis_does() {
    for (pattern, text, expected) in [
        ("*", "save", true),
        ("max*", "maxmemory", true),
        ("MAX*", "maxmemory", true),
        ("max*", "save", false),
        ("*memory*", "maxmemory-policy", true),
        ("m?x*", "maxclients", true),
        ("[ab]ind", "bind", true),
        ("[^ab]ind", "bind", false),
        ("[a-c]ind", "bind", true),
        ("b\\ind", "bind", true),
        (
            "*a*a*a*a*a*a*a*a*b",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            false,
        ),
        ("", "", true),
        ("", "x", false),
        ("x*", "x", true),
    ] {
        assert_eq!(
            glob_match(pattern.as_bytes(), text.as_bytes()),
            expected,
            "{pattern} on {text}"
        );
    }
}

#[test]
fn config_get_answers_a_map_of_the_matching_settings() {
    let port = ClientPort::new(7000);
    let reply = config(
        &port,
        &[Bytes::from("GET"), Bytes::from("max*"), Bytes::from("save")],
    );
    let Reply::Map(pairs) = reply else {
        panic!("{reply:?}")
    };
    let names: Vec<Reply> = pairs.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(
        names,
        ["maxclients", "maxmemory", "maxmemory-policy", "save"]
            .map(Reply::bulk)
            .to_vec()
    );
    let Reply::Map(bulk) = config(
        &port,
        &[Bytes::from("get"), Bytes::from("proto-max-bulk-len")],
    ) else {
        panic!()
    };
    assert_eq!(bulk[0].1, Reply::bulk("67108864"));
    assert!(matches!(
        config(&port, &[Bytes::from("SET"), Bytes::from("save"), Bytes::from("")]),
        Reply::Error(e) if e.starts_with("ERR CONFIG SET is not supported")
    ));
    assert_eq!(
        config(&port, &[Bytes::from("GET")]),
        Reply::error("ERR wrong number of arguments for 'config|get' command")
    );
}

#[test]
fn info_picks_sections_and_leaves_out_the_node_while_it_loads() {
    let port = ClientPort::new(7000);
    let _conn = port.connect("a".into());
    let source = InfoSource {
        port: &port,
        node: None,
    };
    let all = info_text(&source, &[]);
    assert!(all.starts_with("# Server\r\nredis_version:"), "{all}");
    for field in [
        "connected_clients:1\r\n",
        "tcp_port:7000\r\n",
        "loading:1\r\n",
        "total_connections_received:1\r\n",
        "instantaneous_ops_per_sec:",
        "\r\n\r\n# Clients\r\n",
    ] {
        assert!(all.contains(field), "{field} in {all}");
    }
    assert!(!all.contains("# Raft"), "no node, no Raft section");
    let clients = info_text(&source, &[Bytes::from("CLIENTS")]);
    assert!(clients.starts_with("# Clients\r\n") && !clients.contains("# Server"));
    assert_eq!(info_text(&source, &[Bytes::from("nonesuch")]), "");
    let two = info_text(&source, &[Bytes::from("server"), Bytes::from("stats")]);
    assert!(two.contains("# Server") && two.contains("# Stats") && !two.contains("# Memory"));
}

#[test]
fn sizes_for_people() {
    assert_eq!(human_bytes(0), "0B");
    assert_eq!(human_bytes(1023), "1023B");
    assert_eq!(human_bytes(1024), "1.00K");
    assert_eq!(human_bytes(1_268_000), "1.21M");
}

#[test]
fn config_resetstat_zeroes_the_stats() {
    let port = ClientPort::new(0);
    let _conn = port.connect("a".into());
    port.count_commands(5);
    let source = InfoSource {
        port: &port,
        node: None,
    };
    assert!(info_text(&source, &[Bytes::from("stats")]).contains("total_commands_processed:5\r\n"));
    assert_eq!(config(&port, &[Bytes::from("RESETSTAT")]), Reply::ok());
    let stats = info_text(&source, &[Bytes::from("stats")]);
    assert!(stats.contains("total_commands_processed:0\r\n"), "{stats}");
    assert!(
        stats.contains("total_connections_received:0\r\n"),
        "{stats}"
    );
}
