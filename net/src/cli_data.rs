//! The data commands of the `kvstore` command line (get, set, del, incr, cas), made for
//! scripts: values pass byte for byte (`get` writes the value's bytes and nothing else; `set`
//! reads one from a file or standard input with `--value-file`), and the exit status tells the
//! answer ([`EXIT_STATUS_HELP`]). `--pretty` prints as redis-cli does on a terminal instead.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::cli::ServersArg;
use crate::cli_reach::{within, TimeoutArg};
use crate::client::ClientConfig;
use crate::error::CliError;

/// What every data command's `--help` ends with; the README says the same.
pub const EXIT_STATUS_HELP: &str = "Exit status: 0 done; 1 the answer is no (get: no such key; \
del: the key did not exist; cas: not swapped); 2 the request is wrong or was refused (bad \
arguments, an unreadable --value-file, an error from the server); 3 no server answered (for a \
write, its outcome is then unknown: the message says whether it may have been applied).";

/// How a command that ran ends: done, or with the answer "no" (exit status 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    No,
}

#[derive(Subcommand, Debug)]
pub enum DataCmd {
    /// Print the value of KEY: its bytes exactly, with no newline or quotes added.
    #[command(after_help = EXIT_STATUS_HELP)]
    Get {
        key: OsString,
        #[command(flatten)]
        output: OutputArg,
        #[command(flatten)]
        servers: ServersArg,
        #[command(flatten)]
        timeout: TimeoutArg,
    },
    /// Set KEY to VALUE, or to the bytes of --value-file. Prints nothing.
    #[command(after_help = EXIT_STATUS_HELP)]
    Set(SetArgs),
    /// Delete KEY. Prints nothing; exit status 1 if it did not exist.
    #[command(after_help = EXIT_STATUS_HELP)]
    Del {
        key: OsString,
        #[command(flatten)]
        output: OutputArg,
        #[command(flatten)]
        servers: ServersArg,
        #[command(flatten)]
        timeout: TimeoutArg,
    },
    /// Add to an integer value (default 1) and print the new value.
    #[command(after_help = EXIT_STATUS_HELP)]
    Incr {
        key: OsString,
        #[arg(default_value_t = 1, allow_hyphen_values = true)]
        by: i64,
        #[command(flatten)]
        output: OutputArg,
        #[command(flatten)]
        servers: ServersArg,
        #[command(flatten)]
        timeout: TimeoutArg,
    },
    /// Compare-and-set: set KEY to NEW if it holds --expected (or is absent, with --absent).
    /// Prints nothing; exit status 1 if it did not swap.
    #[command(after_help = EXIT_STATUS_HELP)]
    Cas {
        key: OsString,
        new: OsString,
        #[arg(long, conflicts_with = "absent", required_unless_present = "absent")]
        expected: Option<OsString>,
        #[arg(long)]
        absent: bool,
        #[command(flatten)]
        output: OutputArg,
        #[command(flatten)]
        servers: ServersArg,
        #[command(flatten)]
        timeout: TimeoutArg,
    },
}

#[derive(Args, Debug)]
pub struct SetArgs {
    key: OsString,
    /// The value (for bytes a command line cannot carry, such as NUL, use --value-file).
    #[arg(required_unless_present = "value_file", conflicts_with = "value_file")]
    value: Option<OsString>,
    /// Read the value from PATH, byte for byte (`-`: standard input).
    #[arg(long, value_name = "PATH")]
    value_file: Option<PathBuf>,
    #[command(flatten)]
    output: OutputArg,
    #[command(flatten)]
    servers: ServersArg,
    #[command(flatten)]
    timeout: TimeoutArg,
}

#[derive(Args, Debug, Clone, Copy)]
pub struct OutputArg {
    /// Print as redis-cli does on a terminal: "quoted" values, (nil), OK, (integer) N.
    #[arg(long)]
    pretty: bool,
}

/// Runs a data command; what it printed is on stdout, and the outcome sets the exit status.
pub async fn run(cmd: DataCmd) -> Result<Outcome, CliError> {
    match cmd {
        DataCmd::Get {
            key,
            output,
            servers,
            timeout,
        } => {
            let mut client = servers.client(ClientConfig::default())?;
            let value = within(&servers, timeout, false, client.get(&bytes_of(&key))).await?;
            let shown = match (&value, output.pretty) {
                (Some(v), false) => v.to_vec(),
                (Some(v), true) => format!("{}\n", quoted(v)).into_bytes(),
                (None, false) => Vec::new(),
                (None, true) => b"(nil)\n".to_vec(),
            };
            print_bytes(&shown)?;
            Ok(if value.is_some() {
                Outcome::Done
            } else {
                Outcome::No
            })
        }
        DataCmd::Set(args) => {
            let value = match (&args.value, &args.value_file) {
                (Some(v), _) => bytes_of(v),
                (None, Some(path)) => read_value_file(path)?,
                (None, None) => return Err(CliError::Usage("give VALUE or --value-file")),
            };
            let mut client = args.servers.client(ClientConfig::default())?;
            let key = bytes_of(&args.key);
            within(&args.servers, args.timeout, true, client.set(&key, &value)).await?;
            if args.output.pretty {
                print_bytes(b"OK\n")?;
            }
            Ok(Outcome::Done)
        }
        DataCmd::Del {
            key,
            output,
            servers,
            timeout,
        } => {
            let mut client = servers.client(ClientConfig::default())?;
            let existed = within(&servers, timeout, true, client.del(&bytes_of(&key))).await?;
            print_pretty_integer(output, i64::from(existed))?;
            Ok(yes_or_no(existed))
        }
        DataCmd::Incr {
            key,
            by,
            output,
            servers,
            timeout,
        } => {
            let mut client = servers.client(ClientConfig::default())?;
            let value =
                within(&servers, timeout, true, client.incr_by(&bytes_of(&key), by)).await?;
            if output.pretty {
                print_pretty_integer(output, value)?;
            } else {
                print_bytes(format!("{value}\n").as_bytes())?;
            }
            Ok(Outcome::Done)
        }
        DataCmd::Cas {
            key,
            new,
            expected,
            absent: _,
            output,
            servers,
            timeout,
        } => {
            let expected = expected.as_deref().map(bytes_of);
            let (key, new) = (bytes_of(&key), bytes_of(&new));
            let mut client = servers.client(ClientConfig::default())?;
            let swapped = within(
                &servers,
                timeout,
                true,
                client.cas(&key, expected.as_deref(), &new),
            )
            .await?;
            print_pretty_integer(output, i64::from(swapped))?;
            Ok(yes_or_no(swapped))
        }
    }
}

fn yes_or_no(yes: bool) -> Outcome {
    if yes {
        Outcome::Done
    } else {
        Outcome::No
    }
}

/// The bytes of a command-line argument as the shell passed them (not necessarily UTF-8).
fn bytes_of(arg: &OsStr) -> Vec<u8> {
    #[cfg(unix)]
    {
        std::os::unix::ffi::OsStrExt::as_bytes(arg).to_vec()
    }
    #[cfg(not(unix))]
    {
        arg.to_string_lossy().into_owned().into_bytes()
    }
}

fn read_value_file(path: &std::path::Path) -> Result<Vec<u8>, CliError> {
    let mut value = Vec::new();
    let read = if path.as_os_str() == "-" {
        std::io::stdin().lock().read_to_end(&mut value)
    } else {
        std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut value))
    };
    read.map_err(|source| CliError::ValueFile {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(value)
}

fn print_bytes(bytes: &[u8]) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(CliError::Output)
}

fn print_pretty_integer(output: OutputArg, n: i64) -> Result<(), CliError> {
    if output.pretty {
        print_bytes(format!("(integer) {n}\n").as_bytes())?;
    }
    Ok(())
}

/// `value` in double quotes, escaped as redis-cli shows a string on a terminal.
pub fn quoted(value: &[u8]) -> String {
    let mut s = String::with_capacity(value.len() + 2);
    s.push('"');
    for &b in value {
        match b {
            b'\\' => s.push_str("\\\\"),
            b'"' => s.push_str("\\\""),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            0x07 => s.push_str("\\a"),
            0x08 => s.push_str("\\b"),
            b' '..=b'~' => s.push(char::from(b)),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s.push('"');
    s
}

#[cfg(test)]
mod tests {
    use super::quoted;

    #[test]
    fn quoting_escapes_as_redis_cli_does() {
        assert_eq!(quoted(b"hello"), "\"hello\"");
        assert_eq!(quoted(b"a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(quoted(b"\n\r\t\x07\x08"), "\"\\n\\r\\t\\a\\b\"");
        assert_eq!(quoted(b"\x00\x7f\xff"), "\"\\x00\\x7f\\xff\"");
    }
}
