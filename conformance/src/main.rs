//! The main job: until the conformance suite lands (issue 4), a demo of the
//! core's central promise against CPython 3.11's observed behaviour — a
//! native thread calling in while the interpreter finalizes is refused
//! cleanly, never killed, never hung, never crashed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tstate_core::{Error, LockMode, Runtime};

fn main() {
    println!("tstate demo: native threads calling in while interpreters finalize\n");
    let rt = Arc::new(Runtime::new());
    let main_id = rt.main_interpreter().expect("main interpreter");

    // 1. a native thread loops ensure / work / release while another thread
    //    finalizes (CPython 3.11 scenario 1: the thread is killed 200/200).
    let sub = rt
        .create_interpreter(LockMode::Own)
        .expect("subinterpreter");
    let stop = Arc::new(AtomicBool::new(false));
    let (granted, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let worker = {
        let (rt, stop, granted, refused) =
            (rt.clone(), stop.clone(), granted.clone(), refused.clone());
        std::thread::spawn(move || {
            let mut codes = Vec::new();
            while !stop.load(Ordering::Acquire) {
                match rt.ensure(sub) {
                    Ok(t) => {
                        rt.work(sub).expect("work inside a span");
                        rt.release_ticket(t).expect("release");
                        granted.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        if !codes.contains(&e) {
                            codes.push(e);
                        }
                        if e == Error::NoSuchInterpreter {
                            break;
                        }
                    }
                }
            }
            codes
        })
    };
    std::thread::sleep(Duration::from_millis(20));
    let t0 = Instant::now();
    let fin = rt.finalize(sub, Some(Duration::from_secs(5)));
    let took = t0.elapsed();
    stop.store(true, Ordering::Release);
    let codes = worker.join().expect("worker thread survived");
    println!("1. ensure loop vs finalize of a subinterpreter");
    println!(
        "   finalize: {:?} after {:?}",
        fin.map_err(|e| e.error),
        took
    );
    println!(
        "   worker: {} spans granted, {} refused, refusal codes {:?}",
        granted.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        codes
            .iter()
            .map(|e| (e.code(), e.to_string()))
            .collect::<Vec<_>>()
    );
    println!(
        "   (CPython 3.11: the worker thread is killed inside PyGILState_Ensure, 200/200 runs)\n"
    );

    // 2. a new native thread calls in after finalization
    //    (CPython 3.11 scenario 2: segfault).
    let rt2 = rt.clone();
    let late = std::thread::spawn(move || rt2.ensure(sub))
        .join()
        .expect("thread survived");
    println!("2. ensure after finalize returned: {:?}", late.map(|_| ()));
    println!("   (CPython 3.11: segfault)\n");

    // 3. finalize with a holder that never lets go: bounded, names the holder.
    let holder_rt = rt.clone();
    let sub2 = rt
        .create_interpreter(LockMode::Own)
        .expect("subinterpreter");
    let (tx, rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::Builder::new()
        .name("io-callback".into())
        .spawn(move || {
            let t = holder_rt.ensure(sub2).expect("ensure");
            let s = holder_rt.save().expect("save");
            tx.send(()).expect("send");
            go_rx.recv().expect("recv");
            holder_rt.restore(s).expect("restore");
            holder_rt.release_ticket(t).expect("release");
        })
        .expect("spawn");
    rx.recv().expect("holder ready");
    match rt.finalize(sub2, Some(Duration::from_millis(50))) {
        Err(e) => {
            println!("3. finalize with a holder: {} — holders:", e.error);
            for h in &e.holders {
                println!(
                    "   thread #{} (tid {}, {:?}) {:?} x{} held ~{:?}",
                    h.thread_number, h.os_thread_id, h.thread_name, h.kind, h.spans, h.held_for
                );
            }
        }
        Ok(()) => println!("3. unexpected: finalize completed with a holder"),
    }
    println!("   new ensure meanwhile: {:?}", rt.ensure(sub2).map(|_| ()));
    go_tx.send(()).expect("send");
    holder.join().expect("holder");
    println!(
        "   after the holder released: finalize {:?}\n",
        rt.finalize(sub2, None).map_err(|e| e.error)
    );

    rt.finalize_all(Some(Duration::from_secs(5)))
        .expect("runtime finalization");
    let d = rt.diagnostics();
    println!(
        "diagnostics: interpreters {} thread states {} open holds {} finalized {} work-after-finalize {}",
        d.interpreters, d.thread_states, d.open_holds, d.finalized, d.work_after_finalize
    );
    let _ = main_id;
}
