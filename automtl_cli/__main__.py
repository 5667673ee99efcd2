from automtl_cli.cli.main import main

main()
