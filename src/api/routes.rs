//! [`Routes`]: an axum router that remembers which method and path it serves.
//!
//! Every module of the API registers its routes through it, so the daemon knows its own
//! route table ([`Route`]). The tenancy test walks that table and fails for a route it has
//! no row for, so a new route cannot ship without its scope being tested.

use axum::handler::Handler;
use axum::routing::{self, MethodRouter};
use axum::Router;

/// One method on one path, as the router matches it (`/v1/payments/{id}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

/// A router and its table.
pub struct Routes<S = super::AppState> {
    router: Router<S>,
    table: Vec<Route>,
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Routes {
            router: Router::new(),
            table: Vec::new(),
        }
    }
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    pub fn new() -> Self {
        Self::default()
    }

    fn add(mut self, method: &'static str, path: &'static str, mr: MethodRouter<S>) -> Self {
        self.router = self.router.route(path, mr);
        self.table.push(Route { method, path });
        self
    }

    pub fn get<H, T>(self, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        self.add("GET", path, routing::get(handler))
    }

    pub fn post<H, T>(self, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        self.add("POST", path, routing::post(handler))
    }

    /// Both routers and both tables.
    pub fn merge(mut self, other: Routes<S>) -> Self {
        self.router = self.router.merge(other.router);
        self.table.extend(other.table);
        self
    }

    /// A value every route added so far can take as `Extension<T>` (the payment engine).
    pub fn extension<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.router = self.router.layer(axum::Extension(value));
        self
    }

    /// The router and its table, sorted.
    pub fn into_parts(self) -> (Router<S>, Vec<Route>) {
        let mut table = self.table;
        table.sort();
        (self.router, table)
    }
}
