//! What the Redis server's persistence settings let durq promise, read at open.
//!
//! durq on Redis is as durable as Redis is configured to be: an `Ok` means the script ran on
//! the server. With `appendonly yes` + `appendfsync always` the change is on disk before the
//! reply (survives a crash of Redis, the OS or the power); with `everysec`, the last ~1 s may
//! be lost to an OS crash or power loss (a crash of redis-server alone loses nothing); RDB
//! snapshots alone (`save`) lose everything since the last snapshot; with neither, a restart
//! loses every job. An eviction policy other than `noeviction` lets Redis delete jobs when
//! memory is full.

use super::conn::Conn;

/// The settings that matter, as the server reported them (`None`: not readable, e.g. CONFIG
/// is disabled).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// `appendonly`.
    pub appendonly: Option<String>,
    /// `appendfsync`.
    pub appendfsync: Option<String>,
    /// `save` (RDB snapshot schedule; empty: none).
    pub save: Option<String>,
    /// `maxmemory-policy`.
    pub maxmemory_policy: Option<String>,
}

impl Settings {
    /// One sentence per way acknowledged jobs can be lost under these settings.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        let aof = self.appendonly.as_deref() == Some("yes");
        let rdb = self.save.as_deref().is_some_and(|s| !s.trim().is_empty());
        match (self.appendonly.as_deref(), aof, rdb) {
            (None, _, _) => w.push(
                "cannot read Redis' persistence settings (CONFIG GET refused); durq cannot tell whether acknowledged jobs survive a Redis restart".to_string(),
            ),
            (Some(_), false, false) => w.push(
                "Redis has neither AOF nor RDB persistence (appendonly no, save \"\"): every job is lost when Redis restarts; set `appendonly yes` and `appendfsync always`".to_string(),
            ),
            (Some(_), false, true) => w.push(
                "Redis persists only by RDB snapshots (appendonly no): jobs acknowledged since the last snapshot are lost if Redis crashes; set `appendonly yes`".to_string(),
            ),
            _ => {}
        }
        if aof {
            match self.appendfsync.as_deref() {
                Some("always") => {}
                Some("everysec") => w.push(
                    "Redis syncs its AOF once a second (appendfsync everysec): an OS crash or power loss can lose the last second of acknowledged jobs; set `appendfsync always` to keep every one".to_string(),
                ),
                Some(other) => w.push(format!(
                    "Redis leaves AOF syncing to the OS (appendfsync {other}): an OS crash or power loss can lose acknowledged jobs; set `appendfsync always`"
                )),
                None => {}
            }
        }
        if let Some(p) = self.maxmemory_policy.as_deref() {
            if p != "noeviction" {
                w.push(format!(
                    "Redis may evict keys when memory is full (maxmemory-policy {p}): jobs can vanish; set `maxmemory-policy noeviction`"
                ));
            }
        }
        w
    }
}

async fn get(conn: &Conn, name: &str) -> Option<String> {
    let pair: Vec<String> = conn
        .cmd(redis::cmd("CONFIG").arg("GET").arg(name))
        .await
        .ok()?;
    pair.get(1).cloned()
}

/// Reads the settings.
pub async fn read(conn: &Conn) -> Settings {
    Settings {
        appendonly: get(conn, "appendonly").await,
        appendfsync: get(conn, "appendfsync").await,
        save: get(conn, "save").await,
        maxmemory_policy: get(conn, "maxmemory-policy").await,
    }
}

/// Reads the settings and says how acknowledged jobs can be lost under them.
pub async fn check(conn: &Conn) -> Vec<String> {
    read(conn).await.warnings()
}

#[cfg(test)]
mod tests {
    use super::Settings;

    fn s(aof: &str, fsync: &str, save: &str) -> Settings {
        Settings {
            appendonly: Some(aof.into()),
            appendfsync: Some(fsync.into()),
            save: Some(save.into()),
            maxmemory_policy: Some("noeviction".into()),
        }
    }

    #[test]
    fn only_aof_always_is_silent() {
        assert!(s("yes", "always", "").warnings().is_empty());
        assert_eq!(s("yes", "everysec", "").warnings().len(), 1);
        assert!(s("no", "always", "")
            .warnings()
            .iter()
            .any(|w| w.contains("every job is lost")));
        assert!(s("no", "always", "3600 1").warnings()[0].contains("snapshot"));
        let mut evicting = s("yes", "always", "");
        evicting.maxmemory_policy = Some("allkeys-lru".into());
        assert!(evicting.warnings()[0].contains("evict"));
        assert_eq!(Settings::default().warnings().len(), 1);
    }
}
