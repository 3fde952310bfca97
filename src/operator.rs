//! Who is acting, for the records of operator actions and forget requests: `user@host`.

/// `user@host`. The user comes from `USER`/`LOGNAME` and, where a service manager or `su`
/// left those unset, from the account database by the process's uid, so an action is never
/// recorded as done by "unknown".
pub fn operator_name() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(account_of_this_process)
        .unwrap_or_else(|| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{user}@{host}")
}

/// The account name of this process's real uid, from /etc/passwd (`uid=N` when it has none).
fn account_of_this_process() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    Some(
        passwd
            .lines()
            .find_map(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                (fields.len() > 2 && fields[2] == uid).then(|| fields[0].to_string())
            })
            .unwrap_or_else(|| format!("uid={uid}")),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_account_is_found_without_the_environment() {
        let name = super::account_of_this_process().unwrap();
        assert!(!name.is_empty() && name != "unknown", "{name}");
    }
}
