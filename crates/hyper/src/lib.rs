//! hyper 1.x and tower reverse-proxy services over roundrobin balancers (layer L2). Work in progress.
