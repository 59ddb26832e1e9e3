from icrcli.cli.main import main

main()
