//! A thread that takes over the ticket tag of an exited thread continues
//! that tag's sequence (`Ticket`'s documented bound), in every runtime the
//! exited thread used: an exited thread's ticket is refused by the tag's
//! next owner. Before the fix the tag was returned with the sequence it
//! had been handed out with, so the next owner issued the same tickets
//! again and accepted the stale one (`release_ticket(stale)` returned
//! `Ok(())`; found in review). Each case joins its threads; bounded.

use std::sync::Arc;
use tstate_core::{Error, Runtime, Ticket};

/// Runs `f` on a new thread and returns what it returns.
fn on_thread<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    std::thread::spawn(f).join().expect("case thread")
}

#[test]
fn an_exited_thread_s_ticket_is_refused_by_the_tag_s_next_owner() {
    let rt = Arc::new(Runtime::new());
    let main = rt.main_interpreter().unwrap();
    // Other tests of this binary run in parallel and take tags too, so the
    // next thread is not sure to get the exited thread's tag: try until one
    // does (tags are reused last-freed-first; bounded at 100 attempts).
    for _ in 0..100 {
        let r = rt.clone();
        let stale: Ticket = on_thread(move || {
            let t = r.ensure_ticket(main).unwrap();
            r.release_ticket(t).unwrap();
            t
        });
        let r = rt.clone();
        let same_tag = on_thread(move || {
            let mine = r.ensure_ticket(main).unwrap();
            let same_tag = mine.to_raw() >> 19 == stale.to_raw() >> 19;
            let res = r.release_ticket(stale);
            (same_tag, res, r.release_ticket(mine))
        });
        if same_tag.0 {
            assert_eq!(same_tag.1, Err(Error::InvalidHandle), "the stale ticket");
            assert_eq!(same_tag.2, Ok(()), "this thread's own span");
            return;
        }
    }
    panic!("no thread took over an exited thread's tag in 100 attempts");
}

#[test]
fn the_sequence_continues_from_the_furthest_runtime_the_thread_used() {
    // The exited thread went furthest in runtime `a` (5 tickets) and used
    // `b` last (1 ticket). Continuing from `b`'s counter, or restarting,
    // would make the tag's next owner reissue one of `a`'s tickets within
    // its first 5 spans there.
    let (a, b) = (Arc::new(Runtime::new()), Arc::new(Runtime::new()));
    let (ma, mb) = (a.main_interpreter().unwrap(), b.main_interpreter().unwrap());
    for _ in 0..100 {
        let (ra, rb) = (a.clone(), b.clone());
        let old: Vec<u32> = on_thread(move || {
            let ts: Vec<Ticket> = (0..5).map(|_| ra.ensure_ticket(ma).unwrap()).collect();
            for t in ts.iter().rev() {
                ra.release_ticket(*t).unwrap();
            }
            let u = rb.ensure_ticket(mb).unwrap();
            rb.release_ticket(u).unwrap();
            ts.iter().map(|t| t.to_raw()).collect()
        });
        let ra = a.clone();
        let new: Vec<u32> = on_thread(move || {
            let ts: Vec<Ticket> = (0..5).map(|_| ra.ensure_ticket(ma).unwrap()).collect();
            for t in ts.iter().rev() {
                ra.release_ticket(*t).unwrap();
            }
            ts.iter().map(|t| t.to_raw()).collect()
        });
        if new[0] >> 19 == old[0] >> 19 {
            let reissued: Vec<_> = new.iter().filter(|t| old.contains(t)).collect();
            assert!(reissued.is_empty(), "tickets issued again: {reissued:x?}");
            return;
        }
    }
    panic!("no thread took over an exited thread's tag in 100 attempts");
}
