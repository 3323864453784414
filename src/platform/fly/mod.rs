//! Fly.io: the same policies and decision core for a Fly app's machines, through the
//! Machines API. A process group is a workload, a machine an instance; the pool env
//! is each machine's config env (updated machine by machine, under a lease), a leak
//! is remedied by restarting the machine, and poolwarden's restart history lives in
//! the machines' metadata so a restarted reconciler keeps its budgets.

pub mod api;
pub mod group;
pub mod reconcile;
pub mod writer;
pub mod writes;
