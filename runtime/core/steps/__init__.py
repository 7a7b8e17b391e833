"""The step registry: what the runtime knows about each scikit-learn step type it serves.

`kinds` defines the fields of an entry, one module per scikit-learn package (`preprocessing`,
`linear_model`, `tree`, `ensemble`, `neighbors`, `svm`) declares its entries, and `registry`
gathers them. The packager, the predictor and the out-of-distribution check read an entry instead
of switching on the step's type: a new step type is one entry in its module, plus its tests.
"""
