//! The Lua scripts, each one atomic step, loaded once and called by SHA (the `redis` crate's
//! [`Script`] sends EVALSHA and loads the script on NOSCRIPT, e.g. after a server restart).
//!
//! Every queue script is `lua/lib.lua` (shared helpers, the key layout) followed by its body;
//! every key a script touches shares the queue's hash tag.

use redis::Script;

const LIB: &str = include_str!("lua/lib.lua");

fn with_lib(body: &str) -> Script {
    Script::new(&format!("{LIB}\n{body}"))
}

/// All scripts of the backend.
pub struct Scripts {
    pub register: Script,
    pub enqueue: Script,
    pub reserve: Script,
    pub ack: Script,
    pub fail: Script,
    pub heartbeat: Script,
    pub release: Script,
    pub abandon: Script,
    pub get: Script,
    pub list: Script,
    pub stats: Script,
    pub dead: Script,
    pub pause_key: Script,
}

impl Scripts {
    /// Builds (hashes) every script.
    pub fn new() -> Scripts {
        Scripts {
            register: Script::new(include_str!("lua/register.lua")),
            enqueue: with_lib(include_str!("lua/enqueue.lua")),
            reserve: with_lib(include_str!("lua/reserve.lua")),
            ack: with_lib(include_str!("lua/ack.lua")),
            fail: with_lib(include_str!("lua/fail.lua")),
            heartbeat: with_lib(include_str!("lua/heartbeat.lua")),
            release: with_lib(include_str!("lua/release.lua")),
            abandon: with_lib(include_str!("lua/abandon.lua")),
            get: with_lib(include_str!("lua/get.lua")),
            list: with_lib(include_str!("lua/list.lua")),
            stats: with_lib(include_str!("lua/stats.lua")),
            dead: with_lib(include_str!("lua/dead.lua")),
            pause_key: with_lib(include_str!("lua/pause_key.lua")),
        }
    }
}
