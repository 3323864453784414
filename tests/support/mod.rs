pub mod throwaway_pg;
