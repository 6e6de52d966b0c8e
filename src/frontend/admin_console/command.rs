//! The admin console's language: a statement in, a [`Command`] out. Pure; no IO.

/// One admin console statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `SHOW NODES`
    ShowNodes,
    /// `SHOW POOLS`
    ShowPools,
    /// `SHOW CLIENTS`
    ShowClients,
    /// `SHOW SERVERS`
    ShowServers,
    /// `SHOW STATS`
    ShowStats,
    /// `SHOW CONFIG`
    ShowConfig,
    /// `SHOW VERSION`
    ShowVersion,
    /// `RELOAD`
    Reload,
    /// `PAUSE [node]`
    Pause(Option<String>),
    /// `RESUME`
    Resume,
    /// `KILL <client id>`
    Kill(i32),
    /// `SHUTDOWN`
    Shutdown,
    /// `SWITCHOVER [node]`: a planned change of primary (without a node: to the replica that
    /// replayed the most), as `POST /switchover`.
    Switchover(Option<String>),
    /// `DRAIN <node>`: the replica takes no new reads, as `POST /nodes/{name}/drain`.
    Drain(String),
    /// `UNDRAIN <node>`: the replica serves reads again.
    Undrain(String),
    /// `UNFENCE <node>`: clear a fence, as `POST /nodes/{name}/unfence`.
    Unfence(String),
    /// An empty statement (`;`).
    Empty,
}

/// Every command, for the error that lists them.
pub const HELP: &str = "SHOW NODES | POOLS | CLIENTS | SERVERS | STATS | CONFIG | VERSION, RELOAD, \
                        PAUSE [node], RESUME, KILL <client id>, SHUTDOWN, SWITCHOVER [node], DRAIN <node>, UNDRAIN <node>, \
                        UNFENCE <node>";

/// Parse one statement (case-insensitive, a trailing `;` allowed).
///
/// # Errors
/// What is wrong with it, for an ErrorResponse.
pub fn parse(sql: &str) -> Result<Command, String> {
    let text = sql.trim().trim_end_matches(';').trim();
    let words: Vec<String> = text.split_whitespace().map(str::to_ascii_uppercase).collect();
    let name = || text.split_whitespace().nth(1).map_or_else(String::new, |w| w.trim_matches('"').to_string());
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let command = match words.as_slice() {
        [] => Command::Empty,
        ["SHOW", what] => match *what {
            "NODES" => Command::ShowNodes,
            "POOLS" => Command::ShowPools,
            "CLIENTS" => Command::ShowClients,
            "SERVERS" => Command::ShowServers,
            "STATS" => Command::ShowStats,
            "CONFIG" => Command::ShowConfig,
            "VERSION" => Command::ShowVersion,
            _ => return Err(format!("unknown SHOW target {what:?}; try {HELP}")),
        },
        ["RELOAD"] => Command::Reload,
        ["PAUSE"] => Command::Pause(None),
        ["PAUSE", _] => Command::Pause(Some(name())),
        ["RESUME"] => Command::Resume,
        ["KILL", id] => {
            Command::Kill(id.parse().map_err(|_| format!("KILL takes a client id (a number), not {id:?}"))?)
        }
        ["SHUTDOWN"] => Command::Shutdown,
        ["SWITCHOVER"] => Command::Switchover(None),
        ["SWITCHOVER", _] => Command::Switchover(Some(name())),
        ["DRAIN", _] => Command::Drain(name()),
        ["UNDRAIN", _] => Command::Undrain(name()),
        ["UNFENCE", _] => Command::Unfence(name()),
        _ => return Err(format!("the admin console does not understand {text:?}; try {HELP}")),
    };
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_and_their_commands() {
        let cases: [(&str, Result<Command, ()>); 19] = [
            ("show nodes;", Ok(Command::ShowNodes)),
            ("  SHOW   Pools ", Ok(Command::ShowPools)),
            ("SHOW STATS", Ok(Command::ShowStats)),
            ("reload", Ok(Command::Reload)),
            ("PAUSE", Ok(Command::Pause(None))),
            ("pause node1", Ok(Command::Pause(Some("node1".into())))),
            ("RESUME;", Ok(Command::Resume)),
            ("KILL 42", Ok(Command::Kill(42))),
            ("KILL x", Err(())),
            ("SHUTDOWN", Ok(Command::Shutdown)),
            ("drain Node2", Ok(Command::Drain("Node2".into()))),
            ("UNDRAIN \"node2\";", Ok(Command::Undrain("node2".into()))),
            ("switchover", Ok(Command::Switchover(None))),
            ("SWITCHOVER node1", Ok(Command::Switchover(Some("node1".into())))),
            ("unfence node0", Ok(Command::Unfence("node0".into()))),
            ("DRAIN", Err(())),
            (";", Ok(Command::Empty)),
            ("SHOW TABLES", Err(())),
            ("SELECT 1", Err(())),
        ];
        for (sql, expected) in cases {
            assert_eq!(parse(sql).map_err(|_| ()), expected, "{sql}");
        }
    }
}
