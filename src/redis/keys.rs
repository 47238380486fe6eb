//! Key names and job ids of the Redis backend.
//!
//! Invariants:
//! - Every key of one queue starts with `durq:{queue}:`, so a queue lives in one Redis Cluster
//!   slot and one script can touch all of its keys.
//! - The registry keys (queue names and numbers, the id sequence) share the tag `{durq}`.
//! - A job id is `seq << 16 | queue number`: `seq` comes from one global counter (each backend
//!   takes blocks of it), so the ids of one process sort by its enqueue order across queues
//!   (FIFO within a priority and ready time), and the queue of any id is known without a
//!   lookup table per job.
//! - Inside Redis an id is written as 20 zero-padded decimal digits, so members of sorted sets
//!   with equal scores sort by id.

use crate::job::JobId;

/// Bits of a job id that hold the queue number.
pub const QUEUE_BITS: u32 = 16;
/// Largest queue number (queues per Redis database).
pub const MAX_QUEUES: u64 = (1 << QUEUE_BITS) - 1;

/// The set of queue names.
pub const QUEUES: &str = "durq:{durq}:queues";
/// Queue name -> number.
pub const QUEUE_NO: &str = "durq:{durq}:qno";
/// Queue number -> name.
pub const QUEUE_NAME: &str = "durq:{durq}:qname";
/// The last queue number given out.
pub const QUEUE_COUNT: &str = "durq:{durq}:qcount";
/// The job id sequence.
pub const SEQ: &str = "durq:{durq}:seq";

/// The `meta` key of a queue: the key scripts are routed by (its prefix names the rest).
pub fn meta(queue: &str) -> String {
    format!("durq:{{{queue}}}:meta")
}

/// A job id as written inside Redis.
pub fn member(id: JobId) -> String {
    format!("{:020}", id.0)
}

/// The id of the `seq`-th job of queue number `qno`.
pub fn job_id(seq: u64, qno: u64) -> JobId {
    JobId((seq << QUEUE_BITS) | qno)
}

/// The queue number an id belongs to.
pub fn queue_no(id: JobId) -> u64 {
    id.0 & MAX_QUEUES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_sequence_and_name_their_queue() {
        let a = job_id(7, 3);
        let b = job_id(8, 1);
        assert!(a < b);
        assert_eq!((queue_no(a), queue_no(b)), (3, 1));
        assert!(member(a) < member(b));
        assert_eq!(member(a).len(), 20);
        assert_eq!(meta("mail"), "durq:{mail}:meta");
    }
}
