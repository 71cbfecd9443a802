//! Cookie session affinity for roundrobin-core balancers (layer L1). Work in progress.
