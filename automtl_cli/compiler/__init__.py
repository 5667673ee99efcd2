"""The compiler: the IR → a supermodel (search space, task-stacked modules), a plan → the
derived tree network, and either back to prototxt."""
