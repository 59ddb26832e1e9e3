"""Statistics of multi-view features: mergeable moments, the estimators of Sigma_s and Sigma_xi,
the generalized eigensolve, ICR and its companion statistics and interval."""
