"""HTTP only: routes, schemas, dependencies and the one error handler. No SQL, no crypto."""
