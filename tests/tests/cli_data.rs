//! `kvstore get/set/del/incr/cas` as a script uses them: values byte for byte (every byte
//! value, invalid UTF-8, newlines), nothing printed but the answer, and exit statuses that tell
//! the answer: 0 done, 1 no, 2 refused, 3 no server answered.

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use e2e::{free_port, kvstore_bin, TestCluster};

const BOUND: Duration = Duration::from_secs(30);

/// What one run of `kvstore` gave.
#[derive(Debug)]
struct Run {
    status: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
}

/// Runs `kvstore ARGS... --servers SERVERS`, with `stdin` as its standard input.
fn kvstore(servers: &str, args: &[&OsStr], stdin: &[u8]) -> Run {
    let mut child = Command::new(kvstore_bin())
        .args(args)
        .args(["--servers", servers])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running kvstore");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).expect("writing stdin");
    drop(input);
    let out = child.wait_with_output().expect("kvstore output");
    Run {
        status: out.status.code(),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The runner for `cluster`, arguments given as byte strings (any bytes but NUL).
fn runner(cluster: &TestCluster) -> impl Fn(&[&[u8]], &[u8]) -> Run {
    let servers = cluster.servers().join(",");
    move |args, stdin| {
        let args: Vec<&OsStr> = args.iter().map(|a| OsStr::from_bytes(a)).collect();
        kvstore(&servers, &args, stdin)
    }
}

#[track_caller]
fn assert_run(run: &Run, status: i32, stdout: &[u8]) {
    assert_eq!(
        (run.status, run.stdout.as_slice()),
        (Some(status), stdout),
        "stdout as text: {:?}; stderr: {}",
        String::from_utf8_lossy(&run.stdout),
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_pass_byte_for_byte_and_the_exit_status_tells_the_answer() {
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader(BOUND).await;
    let run = runner(&cluster);

    let every_byte: Vec<u8> = (0..=255u8).collect();
    assert_run(
        &run(&[b"set", b"bytes", b"--value-file", b"-"], &every_byte),
        0,
        b"",
    );
    assert_run(&run(&[b"get", b"bytes"], b""), 0, &every_byte);

    let file = cluster.dir.path().join("value.bin");
    let from_file: Vec<u8> = every_byte.iter().rev().copied().collect();
    std::fs::write(&file, &from_file).expect("value file");
    let path = file.as_os_str().as_bytes();
    assert_run(
        &run(&[b"set", b"from-file", b"--value-file", path], b""),
        0,
        b"",
    );
    assert_run(&run(&[b"get", b"from-file"], b""), 0, &from_file);

    // Invalid UTF-8 in a key and a value given on the command line, and newlines.
    assert_run(&run(&[b"set", b"k\xff\xfe", b"v\xc3\x28\x80"], b""), 0, b"");
    assert_run(&run(&[b"get", b"k\xff\xfe"], b""), 0, b"v\xc3\x28\x80");
    assert_run(&run(&[b"set", b"lines", b"a\nb\r\n\n"], b""), 0, b"");
    assert_run(&run(&[b"get", b"lines"], b""), 0, b"a\nb\r\n\n");
    assert_run(&run(&[b"set", b"empty", b""], b""), 0, b"");
    assert_run(&run(&[b"get", b"empty"], b""), 0, b"");

    // A missing key: exit status 1 and nothing printed.
    let missing = run(&[b"get", b"no-such-key"], b"");
    assert_run(&missing, 1, b"");
    assert_eq!(
        missing.stderr, "",
        "a missing key is an answer, not an error"
    );

    // --pretty prints as redis-cli does on a terminal; the exit status stays.
    assert_run(
        &run(&[b"get", b"no-such-key", b"--pretty"], b""),
        1,
        b"(nil)\n",
    );
    assert_run(
        &run(&[b"get", b"lines", b"--pretty"], b""),
        0,
        b"\"a\\nb\\r\\n\\n\"\n",
    );
    assert_run(&run(&[b"set", b"p", b"v", b"--pretty"], b""), 0, b"OK\n");

    // del: 0 if it deleted, 1 if there was nothing to delete.
    assert_run(&run(&[b"del", b"p"], b""), 0, b"");
    assert_run(&run(&[b"del", b"p"], b""), 1, b"");
    assert_run(&run(&[b"del", b"p", b"--pretty"], b""), 1, b"(integer) 0\n");

    // incr prints the new value; a value that is no integer is an error (2), on stderr.
    assert_run(&run(&[b"incr", b"n"], b""), 0, b"1\n");
    assert_run(&run(&[b"incr", b"n", b"-5"], b""), 0, b"-4\n");
    assert_run(
        &run(&[b"incr", b"n", b"--pretty"], b""),
        0,
        b"(integer) -3\n",
    );
    let not_a_number = run(&[b"incr", b"lines"], b"");
    assert_run(&not_a_number, 2, b"");
    assert!(
        not_a_number.stderr.contains("not an integer"),
        "{}",
        not_a_number.stderr
    );

    // cas: 0 if it swapped, 1 if not.
    assert_run(&run(&[b"cas", b"c", b"first", b"--absent"], b""), 0, b"");
    assert_run(&run(&[b"cas", b"c", b"again", b"--absent"], b""), 1, b"");
    assert_run(
        &run(&[b"cas", b"c", b"third", b"--expected", b"wrong"], b""),
        1,
        b"",
    );
    assert_run(
        &run(&[b"cas", b"c", b"second\xff", b"--expected", b"first"], b""),
        0,
        b"",
    );
    assert_run(&run(&[b"get", b"c"], b""), 0, b"second\xff");

    // Usage errors and an unreadable value file: 2, with the reason on stderr.
    let no_value = run(&[b"set", b"k"], b"");
    assert_eq!(no_value.status, Some(2), "{no_value:?}");
    let both = run(&[b"set", b"k", b"v", b"--value-file", b"-"], b"");
    assert_eq!(both.status, Some(2), "{both:?}");
    let unreadable = run(&[b"set", b"k", b"--value-file", b"/nonexistent/value"], b"");
    assert_run(&unreadable, 2, b"");
    assert!(
        unreadable.stderr.contains("/nonexistent/value"),
        "{}",
        unreadable.stderr
    );
    assert_run(&run(&[b"get", b"k"], b""), 1, b"");
}

#[test]
fn an_unreachable_cluster_exits_3_with_the_reason_on_stderr() {
    let nobody = format!("127.0.0.1:{}", free_port());
    for args in [&["get", "k"][..], &["set", "k", "v"], &["del", "k"]] {
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        let run = kvstore(&nobody, &args, b"");
        assert_run(&run, 3, b"");
        assert!(run.stderr.contains("no server answered"), "{}", run.stderr);
    }
}

#[test]
fn help_documents_the_exit_status() {
    for (args, says) in [
        (
            &["--help"][..],
            "Exit status of get/set/del/incr/cas: 0 done; 1 the answer is no",
        ),
        (
            &["get", "--help"],
            "Exit status: 0 done; 1 the answer is no (get: no such key;",
        ),
        (&["set", "--help"], "3 no server answered"),
    ] {
        let out = Command::new(kvstore_bin())
            .args(args)
            .output()
            .expect("kvstore --help");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?}");
        assert!(help.contains(says), "{help}");
    }
}
