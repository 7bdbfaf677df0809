"""The Streamlit internal that ``pages/_streamlit_shim.py`` relies on is still there and still
means what the shim assumes (the end-to-end check is the browser test of a shared link)."""

import inspect

import pytest
from streamlit import config

CHANGED = ("Streamlit changed the internal that pages/_streamlit_shim.py relies on "
           "(PagesManager.uses_pages_directory: a pages/ folder next to the entry point runs "
           "its pages alone until st.navigation is called). Check whether a link straight to a "
           "page still works as a server's first request (tests/test_browser.py -k "
           "shared_link), then update or drop the shim: ")


def test_the_pages_folder_flag_still_selects_the_legacy_multipage_mode(tmp_path):
    try:
        from streamlit.commands import navigation
        from streamlit.runtime import pages_manager
        from streamlit.runtime.scriptrunner import script_runner
    except ImportError as err:
        pytest.fail(CHANGED + f"a module moved ({err})")
    manager = getattr(pages_manager, "PagesManager", None)
    assert manager is not None, CHANGED + "PagesManager is gone"
    assert hasattr(manager, "uses_pages_directory"), CHANGED + "the flag is gone"
    # The script runner runs the legacy mode on the flag; st.navigation clears it.
    assert "PagesManager.uses_pages_directory" in inspect.getsource(script_runner), (
        CHANGED + "the script runner no longer reads the flag")
    assert "uses_pages_directory = False" in inspect.getsource(navigation.navigation), (
        CHANGED + "st.navigation no longer clears the flag")
    saved = manager.uses_pages_directory
    try:
        manager.uses_pages_directory = None
        (tmp_path / "pages").mkdir()
        (tmp_path / "app.py").write_text("")
        manager(str(tmp_path / "app.py"))
        assert manager.uses_pages_directory is True, (
            CHANGED + "a pages/ folder no longer sets the flag")
    finally:
        manager.uses_pages_directory = saved


def test_the_shim_leaves_the_legacy_mode():
    from streamlit.runtime.pages_manager import PagesManager

    from pages._streamlit_shim import use_navigation

    saved_flag, saved_option = PagesManager.uses_pages_directory, config.get_option(
        "global.appTest")
    try:
        PagesManager.uses_pages_directory = True
        config.set_option("global.appTest", True)  # no rerun outside a script run
        use_navigation()
        assert PagesManager.uses_pages_directory is False
    finally:
        PagesManager.uses_pages_directory = saved_flag
        config.set_option("global.appTest", saved_option)
