//! The guard design on a thread without a ticket tag (all 4,095 taken by
//! live threads): its ensure is refused with `Busy`, as the handle design's
//! is. Before the fix it handed out `Ticket(0)`, which its own release then
//! refused with `InvalidHandle` (and the C facade returned a NULL token
//! with no error set); found in review. The same for the re-attach after
//! a save, whose fast path checks the tag itself (a review's mutation
//! showed that nothing else caught its removal: a tag-0 ticket came back).
//! A binary of its own: it takes every tag in the process. 4,095 threads
//! with 64 KiB stacks, joined.

use std::sync::{Arc, Barrier};
use tstate_core::{Error, Runtime};

#[test]
fn the_guard_design_refuses_a_thread_without_a_tag_with_busy() {
    let rt = Arc::new(Runtime::new());
    let main = rt.main_interpreter().unwrap();
    let n = 4095;
    let hold = Arc::new(Barrier::new(n + 1));
    let done = Arc::new(Barrier::new(n + 1));
    let hs: Vec<_> = (0..n)
        .map(|_| {
            let (r, h, d) = (rt.clone(), hold.clone(), done.clone());
            std::thread::Builder::new()
                .stack_size(64 << 10)
                .spawn(move || {
                    // any call creates the context and takes a tag
                    let _ = r.release();
                    h.wait();
                    d.wait();
                })
                .unwrap()
        })
        .collect();
    hold.wait();
    let r = rt.clone();
    let out = std::thread::spawn(move || {
        let no_tag = r.ensure_ticket(main);
        let g = r.guard_for(main).unwrap();
        let guarded = r.ensure_with_guard(g);
        let v = r.view_for(main).unwrap();
        let from_view = r.ensure_from_view(v);
        // the re-attach after a save (its fast path checks the tag too):
        // the thread-stored ensure needs none, the ticket designs refuse
        r.ensure(main).unwrap();
        let s = r.save().unwrap();
        let reattach = (
            r.ensure_ticket(main).map(|_| ()),
            r.ensure_with_guard(g).map(|_| ()),
        );
        r.restore(s).unwrap();
        r.release().unwrap();
        // the refused ensure-from-view closed the guard it took
        r.close_guard(g).unwrap();
        (no_tag, guarded, from_view, reattach)
    })
    .join()
    .unwrap();
    done.wait();
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(out.0, Err(Error::Busy), "no tag left for this thread");
    assert_eq!(out.1, Err(Error::Busy));
    assert_eq!(out.2, Err(Error::Busy));
    assert_eq!(out.3, (Err(Error::Busy), Err(Error::Busy)), "re-attach");
    assert!(
        rt.holders(main).unwrap().is_empty(),
        "nothing left holding main"
    );
}
