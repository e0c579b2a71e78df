// placeholder: replaced by the dashboard implementation
