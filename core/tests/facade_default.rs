//! A `Facade` that does not override `global_if_chosen` has no fast path:
//! its runtime is created only inside the panic boundary. Before the fix
//! the default answered `Some(Self::global())`, so the fast path of
//! `c_abi::is_attached` created the runtime outside the boundary, and a
//! panic while creating it unwound out of the C function (found in
//! review).

use tstate_core::c_abi::{self, Facade, Global};

struct PanickingFacade;

impl Facade for PanickingFacade {
    fn global() -> &'static Global {
        panic!("creating this facade's runtime fails");
    }
}

#[test]
fn a_facade_without_global_if_chosen_creates_its_runtime_inside_the_boundary() {
    assert!(PanickingFacade::global_if_chosen().is_none());
    let r = std::panic::catch_unwind(|| c_abi::is_attached::<PanickingFacade>(1));
    assert_eq!(r.ok(), Some(0), "the panic stayed inside the boundary");
}
