pub mod argocd;
pub mod e2e;
pub mod fly;
pub mod local;
pub mod pgbouncer;
pub mod throwaway_pg;
pub mod tls;
pub mod waits;
